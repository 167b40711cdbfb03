"""One input file -> its segmentation file: 2D images, volumes and challenge npz cases alike.

Used by `kdsam predict` for one file and for folders. Every output gets a JSON sidecar beside it
(`<output stem>.json`) saying what was read, how its intensities were mapped to 8 bits, the boxes,
the model and the seconds taken, so a mask file never loses how it was made.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data import medical
from kdsam.data.folder import IMAGE_SUFFIXES
from kdsam.data.imageio import read_image_with_intensity, write_png
from kdsam.errors import BadFileError, KdsamError, reading
from kdsam.infer import challenge, dicomseg
from kdsam.infer.cvpr25 import is_cvpr25_file
from kdsam.infer.prompts import about, check_boxes, check_points, decode_object, one_box
from kdsam.infer.volume import segment_stack
from kdsam.models.sam import KDSam
from kdsam.utils.atomic import write_json

Model = Any  # a KDSam, or an ONNX export's OnnxPredictor (all but everything mode); both carry a `card`


@dataclass
class Prompts:
    """Prompts for files that carry none: 2D boxes (Nx4, exclusive max), 3D boxes (Nx6, inclusive),
    2D points (Nx3: x, y, label 1 positive / 0 negative; one object, with at most one box), or
    `everything` > 0: no prompt at all, SAM's automatic mask generator with that many points per
    side (2D images; a label map out)."""

    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))
    boxes3d: np.ndarray = field(default_factory=lambda: np.zeros((0, 6), np.float32))
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.float32))
    everything: int = 0


def kind_of(path: Path) -> str | None:
    """'npz' (a challenge case), 'volume' (NIfTI, MHA, NRRD or a DICOM series folder), 'image', or None."""
    name = path.name.lower()
    if path.is_file() and name.endswith(".npz"):
        return "npz"
    if medical.is_volume(path):
        return "volume"
    if path.is_file() and (path.suffix.lower() in IMAGE_SUFFIXES or medical.is_dicom(path)):
        return "image"
    return None


def stem(path: Path) -> str:
    """File name without its image/volume suffix (case.nii.gz -> case)."""
    return medical.drop_suffix(path.name, (*medical.VOLUME_SUFFIXES, ".npz", *IMAGE_SUFFIXES))


def output_name(path: Path, kind: str) -> str:
    """Where a folder run writes the answer to `path`: the same name for npz cases (the challenge's
    rule), <stem>.png for images, and for volumes <stem> in the input's format: .mha or .nrrd for
    MetaImage or NRRD, .nii.gz for the rest (DICOM in, NIfTI out)."""
    if kind == "npz":
        return path.name
    return stem(path) + (medical.mask_suffix(path) if kind == "volume" else ".png")


def sidecar(output: Path) -> Path:
    return output.with_name(stem(output) + ".json")


def _model_label(model: Model) -> str:
    return str(getattr(model, "name", type(model).__name__))


def read_case(path: Path) -> challenge.Case:
    """A challenge case whose image is not empty and whose 2D boxes lie inside it (3D boxes are
    checked against the volume by segment_stack)."""
    with reading(path, "npz case"):
        case = challenge.read_case(path)
        case.boxes = np.asarray(case.boxes, dtype=np.float64)  # text boxes fail here, by name
    if case.imgs.size == 0:
        raise BadFileError(f"{path}: imgs of shape {case.imgs.shape} holds no pixels")
    if not case.is_3d:
        with about(path):
            check_boxes(case.boxes, case.imgs.shape[:2])
    return case


def segment_image(model: Model, path: Path, prompts: Prompts, window: Any) -> tuple[np.ndarray, np.ndarray, dict]:
    """(HxW bool mask, or a uint16 label map in everything mode; the 8-bit RGB image; its intensity
    record). Boxes alone give the union of their masks; points give one object."""
    from kdsam.predictor import predictor_of

    if not (len(prompts.boxes) or len(prompts.points) or prompts.everything):
        raise KdsamError(
            f"{path}: no prompt for this image; give --box X0,Y0,X1,Y1, --point X,Y[,LABEL], --everything "
            "or a --boxes JSON entry"
        )
    with reading(path, "image"):
        image, intensity = read_image_with_intensity(path, window=window)
    if prompts.everything and not isinstance(model, KDSam):
        raise KdsamError(f"{path}: everything mode needs a PyTorch model; an ONNX export takes boxes and clicks")
    if prompts.everything:
        from kdsam.infer.everything import segment_everything

        return segment_everything(model, image, prompts.everything).label_map, image, intensity
    with about(path):
        boxes = check_boxes(prompts.boxes, image.shape[:2])
        points, labels = check_points(prompts.points[:, :2], prompts.points[:, 2], image.shape[:2])
        box = one_box(boxes) if len(points) else None
    predictor = predictor_of(model)
    predictor.set_image(image)
    if len(points):
        return decode_object(predictor, points, labels, box)[0], image, intensity
    return predictor.segment(boxes), image, intensity


def segment_volume(
    model: Model, volume: medical.Volume, boxes3d: np.ndarray, window: Any, batch_size: int | None = None
) -> tuple[np.ndarray, np.ndarray, dict]:
    """((I, J, K) uint8 labels, the (K, J, I) 8-bit stack the model saw, its intensity record). The
    stack is made as training on a volume dataset makes its slices (`slice_stack`), so a model sees
    the same pixels in both."""
    from kdsam.data.volumes.cases import as_trained, slice_stack

    if len(boxes3d) == 0:
        raise KdsamError(f"{volume.path}: no 3D box for this volume; give --box3d X0,Y0,Z0,X1,Y1,Z1")
    window, modality = as_trained(window, model.card)
    stack, record = slice_stack(volume, window, modality)
    try:
        labels = segment_stack(model, stack, boxes3d, batch_size, where="--box3d")
    except ValueError as err:
        raise KdsamError(f"{volume.path}: {err}") from err
    return np.ascontiguousarray(labels.transpose(2, 1, 0)), stack, record


def run_file(
    model: Model,
    path: Path,
    output: Path,
    prompts: Prompts,
    window: Any = "auto",
    batch_size: int | None = None,
    overlay: Path | None = None,
    names: list[str] | None = None,
) -> dict[str, Any]:
    """Segment one input into `output` (+ its JSON sidecar, + an overlay PNG if asked); the record.
    An `output` ending in .dcm is a DICOM SEG of a DICOM input, its segments named from `names`."""
    kind = kind_of(path)
    seg = dicomseg.is_seg_output(output)
    if seg:
        dicomseg.check_source(path)
    start = time.perf_counter()
    record: dict[str, Any] = {"input": str(path), "output": str(output), "kind": kind, "model": _model_label(model)}
    if kind == "npz" and is_cvpr25_file(path):
        from kdsam.infer.interactive3d import answer_case25

        record.update(answer_case25(model, path, output, batch_size))
    elif kind == "npz":
        case = read_case(path)
        segs = challenge.segment_case(model, case, batch_size)
        challenge.write_segs(output, segs)
        record.update(
            boxes=case.boxes,
            shape=list(segs.shape),
            foreground=int((segs > 0).sum()),
            intensity={"method": "none", "source": "npz uint8"},
        )
        if overlay:
            _volume_overlay(overlay, case.imgs if case.is_3d else case.imgs[None], segs if case.is_3d else segs[None])
    elif kind == "volume":
        volume = medical.read_volume(path)
        labels, stack, intensity = segment_volume(model, volume, prompts.boxes3d, window, batch_size)
        if seg:
            record.update(
                dicomseg.save_seg(
                    output, volume.sources, volume.slices(labels), len(prompts.boxes3d), names, record["model"]
                )
            )
        else:
            medical.write_mask(output, labels, volume)
        record.update(
            boxes3d=prompts.boxes3d,
            shape=list(labels.shape),
            foreground=int((labels > 0).sum()),
            spacing=list(volume.spacing),
            intensity=intensity,
            affine=volume.affine,
            axes="x, y, z = the file's first, second, third array axes (voxel indices)",
        )
        if overlay:
            _volume_overlay(overlay, stack, volume.slices(labels))
    elif kind == "image":
        mask, image, intensity = segment_image(model, path, prompts, window)
        if seg:
            count = int(mask.max()) if prompts.everything else 1
            record.update(dicomseg.save_seg(output, dicomseg.read_sources(path), mask, count, names, record["model"]))
        else:
            write_png(output, mask)
        record.update(
            boxes=prompts.boxes, shape=list(mask.shape), foreground=int((mask > 0).sum()), intensity=intensity
        )
        if len(prompts.points):
            record["points"] = prompts.points
        if prompts.everything:
            record.update(
                prompts=f"everything (SamAutomaticMaskGenerator, {prompts.everything} points per side)",
                objects=int(mask.max()),
            )
        if overlay:
            write_png(overlay, _image_overlay(image, mask, prompts))
    else:
        raise BadFileError(f"{path}: not an image, volume or challenge npz kdsam reads")
    record["seconds"] = time.perf_counter() - start
    write_json(sidecar(output), {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in record.items()})
    return record


def _image_overlay(image: np.ndarray, mask: np.ndarray, prompts: Prompts) -> np.ndarray:
    """The mask tinted with its prompts drawn (boxes in yellow, points green/red), or every label
    of an everything-mode label map in its own colour."""
    from kdsam.report.overlays import draw_boxes, draw_points
    from kdsam.report.overlays import overlay as tint

    if prompts.everything:
        from kdsam.infer.everything import label_overlay

        return label_overlay(image, mask)
    return draw_points(draw_boxes(tint(image, mask), prompts.boxes), prompts.points)


def _volume_overlay(path: Path, stack: np.ndarray, labels: np.ndarray, n: int = 4) -> None:
    """A few slices through the labelled range, each with its labels tinted (docs, quick checks)."""
    from kdsam.report.overlays import grid, overlay

    zs = np.nonzero(labels.reshape(labels.shape[0], -1).any(axis=1))[0]
    if len(zs) == 0:
        zs = np.arange(labels.shape[0])
    picks = np.unique(np.linspace(zs[0], zs[-1], min(n, len(zs))).round().astype(int))
    pictures = [overlay(stack[z], labels[z] > 0) for z in picks]
    grid([pictures], path, col_titles=[f"slice z={z}" for z in picks])
