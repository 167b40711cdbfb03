"""One input of `kdsam predict`, shared by local files and PACS series (kdsam.commands.predict_pacs):
the prompts read from the flags, the model loaded for the inputs, and one case checked before the
model loads, segmented and summarised in one line."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.commands.options import set_threads
from kdsam.errors import KdsamError

if TYPE_CHECKING:
    from kdsam.export.onnx_predictor import OnnxPredictor
    from kdsam.infer.files import Prompts
    from kdsam.models.sam import KDSam


def parse_numbers(text: str, flag: str, n: int, names: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != n or not all(np.isfinite(values)):
        raise KdsamError(f"{flag} {text!r}: expected {n} numbers {names}")
    return values


def parse_box(text: str) -> list[float]:
    """'X0,Y0,X1,Y1' -> four floats with X0 < X1 and Y0 < Y1, or one line saying what is wrong."""
    box = parse_numbers(text, "--box", 4, "X0,Y0,X1,Y1")
    if box[0] >= box[2] or box[1] >= box[3]:
        raise KdsamError(f"--box {text!r}: X0 must be less than X1 and Y0 less than Y1")
    return box


def parse_point(text: str) -> list[float]:
    """'X,Y' or 'X,Y,LABEL' -> [x, y, label], label 1 (positive) unless given as 0."""
    parts = text.split(",")
    values = parse_numbers(",".join([*parts, "1"] if len(parts) == 2 else parts), "--point", 3, "X,Y[,LABEL]")
    if values[2] not in (0, 1):
        raise KdsamError(f"--point {text!r}: LABEL is 1 (positive) or 0 (negative)")
    return values


def parse_box3d(text: str) -> list[float]:
    """'X0,Y0,Z0,X1,Y1,Z1' -> six whole numbers (voxel indices: 8.5 is refused, not rounded), each
    minimum at most its maximum."""
    box = parse_numbers(text, "--box3d", 6, "X0,Y0,Z0,X1,Y1,Z1")
    if not all(v.is_integer() for v in box):
        raise KdsamError(f"--box3d {text!r}: voxel indices are whole numbers (a box is not rounded for you)")
    if any(box[i] > box[i + 3] for i in range(3)):
        raise KdsamError(f"--box3d {text!r}: each of X0, Y0, Z0 must be at most X1, Y1, Z1 (inclusive indices)")
    return box


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Never replace a user's file by accident: existing outputs need --overwrite."""
    for path in paths:
        if path.exists() and not overwrite:
            raise KdsamError(f"{path} exists: pass --overwrite to replace it, or choose another path")


def prompts_from(args: argparse.Namespace) -> Prompts:
    """--box, --box3d, --point and --everything as one `Prompts`, each bad flag refused in one line."""
    from kdsam.infer.files import Prompts

    boxes = np.array([parse_box(t) for t in args.box], dtype=np.float32).reshape(-1, 4)
    boxes3d = np.array([parse_box3d(t) for t in args.box3d], dtype=np.float32).reshape(-1, 6)
    points = np.array([parse_point(t) for t in args.point], dtype=np.float32).reshape(-1, 3)
    if args.everything and (len(boxes) or len(points) or len(boxes3d)):
        raise KdsamError("--everything takes no prompt: leave out --box, --point and --box3d")
    if args.points_per_side < 1:
        raise KdsamError("--points-per-side must be at least 1")
    return Prompts(boxes, boxes3d, points, args.points_per_side if args.everything else 0)


def slice_by_slice(inputs: list[tuple[Path, str]]) -> bool:
    """Does any input run slice by slice (a volume, a 3D challenge case)?"""
    from kdsam.infer.challenge import is_3d_name
    from kdsam.infer.cvpr25 import is_cvpr25_file

    return any(
        kind == "volume" or (kind == "npz" and (is_3d_name(path.name) or is_cvpr25_file(path))) for path, kind in inputs
    )


def model_for(args: argparse.Namespace, slices: bool) -> KDSam | OnnxPredictor:
    """The model on its fast path on --device (under torchrun, auto gives each rank its own GPU),
    or an ONNX export folder's predictor under --runtime. For `slices` (volumes among the inputs) an
    export runs two slices at once, each session on half the threads; 2D inputs get them all."""
    import torch

    from kdsam.models.loading import load_predictor
    from kdsam.models.spec import parse_model
    from kdsam.utils.device import resolve_device
    from kdsam.utils.ranks import torchrun_place

    spec = parse_model(args.model)
    device = resolve_device(args.device)
    if args.device == "auto" and device.type == "cuda":
        device = torch.device(f"cuda:{torchrun_place().local_rank}")
    session = None
    if spec.kind == "onnx":
        from kdsam.export.onnx_predictor import threads_per_session

        total = args.threads or os.cpu_count() or 1
        session = threads_per_session(total) if slices else total
    set_threads(args.threads)
    predictor = load_predictor(spec, str(device), args.runtime, session)
    return predictor if spec.kind == "onnx" else predictor.model


def _single_output(args: argparse.Namespace, kind: str) -> Path:
    """--out as given, or inside it when it is an existing folder; checked against the input's kind."""
    from kdsam.data.itk_io import WRITTEN_SUFFIXES
    from kdsam.data.medical import NIFTI_SUFFIXES, VOLUME_SUFFIXES
    from kdsam.infer.files import output_name

    out = args.out
    if out.is_dir():
        return out / output_name(args.image, kind)
    name = out.name.lower()
    if name.endswith(".dcm") and kind != "npz":
        return out  # a DICOM SEG; run_file refuses non-DICOM inputs
    if kind == "volume" and not name.endswith((*NIFTI_SUFFIXES, *WRITTEN_SUFFIXES)):
        raise KdsamError(
            f"--out {out}: a volume's mask is a NIfTI, MetaImage or NRRD file; name it .nii.gz, .mha or .nrrd "
            "(or give a folder)"
        )
    if kind == "npz" and not name.endswith(".npz"):
        raise KdsamError(f"--out {out}: a challenge case's answer is an .npz file (or give a folder)")
    if kind == "image" and name.endswith((*VOLUME_SUFFIXES, ".npz")):
        raise KdsamError(f"--out {out}: a 2D image's mask is a PNG")
    return out


def summary(out: Path, record: dict) -> str:
    """One line on what was segmented: the share of the image, the seconds, the sidecar."""
    from kdsam.infer.files import sidecar

    share = record["foreground"] / max(1, int(np.prod(record["shape"])))
    unit = "voxels" if record["kind"] == "volume" else "pixels"
    return (
        f"{out}: {record['foreground']} object {unit} ({share:.1%}) in {record['seconds']:.2f} s "
        f"(metadata: {sidecar(out)})"
    )


def segment_one(args: argparse.Namespace) -> tuple[Path, dict]:
    """--image into --out, every user mistake refused before the model loads; (output, its record)."""
    from kdsam.data.imageio import image_size
    from kdsam.infer.dicomseg import check_source, is_seg_output, segment_names
    from kdsam.infer.files import kind_of, run_file, sidecar
    from kdsam.infer.prompts import about, check_boxes, check_points, one_box

    kind = kind_of(args.image)
    if kind is None:
        raise KdsamError(f"{args.image}: not found, or not an image, volume or challenge npz kdsam reads")
    out = _single_output(args, kind)
    refuse_existing([out, sidecar(out)] + ([args.overlay] if args.overlay else []), args.overwrite)
    prompts = prompts_from(args)
    if kind == "image":
        if prompts.boxes3d.size:
            raise KdsamError(f"{args.image}: a 2D image takes --box, not --box3d")
        if not (prompts.boxes.size or prompts.points.size or prompts.everything):
            raise KdsamError(f"{args.image}: give --box X0,Y0,X1,Y1, --point X,Y[,LABEL] or --everything")
        size = image_size(args.image)
        with about(args.image):  # the rule every entry point checks by, before the model loads
            check_boxes(prompts.boxes, size, [f"--box {t!r}" for t in args.box])
            check_points(prompts.points[:, :2], prompts.points[:, 2], size, [f"--point {t!r}" for t in args.point])
            if len(prompts.points):
                one_box(prompts.boxes)
    if kind != "image" and (prompts.points.size or prompts.everything):
        raise KdsamError(f"{args.image}: --point and --everything are for 2D images")
    if kind == "npz" and (prompts.boxes.size or prompts.boxes3d.size):
        raise KdsamError(f"{args.image}: a challenge npz carries its own boxes; leave out --box and --box3d")
    if kind == "volume" and prompts.boxes.size:
        raise KdsamError(f"{args.image}: a volume takes --box3d X0,Y0,Z0,X1,Y1,Z1 (voxel indices), not --box")
    from kdsam.data.intensity import parse_window

    window = parse_window(args.window)
    count = None if prompts.everything else len(prompts.boxes3d) if kind == "volume" else 1
    if is_seg_output(out):
        check_source(args.image)
        if count is not None:  # everything mode's label count is known only afterwards
            segment_names(count, label_names(args, count))
    model = model_for(args, slice_by_slice([(args.image, kind)]))
    return out, run_file(
        model, args.image, out, prompts, window, args.batch_size, args.overlay, label_names(args, count)
    )


def label_names(args: argparse.Namespace, count: int | None = None) -> list[str]:
    """A SEG's segment names: --label-name in order, or the --labels dataset.json's names for the
    first `count` labels (a dataset names all its organs; a run may prompt fewer)."""
    from kdsam.infer.dicomseg import dataset_label_names

    if args.label_name and args.labels:
        raise KdsamError("give segment names by --label-name or by --labels DATASET_JSON, not both")
    return dataset_label_names(args.labels)[:count] if args.labels else list(args.label_name)
