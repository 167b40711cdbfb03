"""`kdsam predict`: segment an image, a volume or a challenge npz case from box prompts, or a folder of them.

2D images give a 0/255 PNG (the union of the per-box masks); volumes (NIfTI, DICOM series folders)
give a NIfTI label map on the input's grid (box i -> label i + 1) from 3D boxes; CVPR24 npz cases
give an npz of `segs`. Every output gets a JSON sidecar (kdsam.infer.files).

Exit codes: 0 every output written; 1 a folder run skipped some files (each named on one line of
stderr, whatever went wrong reading it, and counted in the summary; the others are written);
2 a mistake in the command or its one input (one line, nothing written); 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.commands.options import add_device_argument, set_threads
from kdsam.errors import KdsamError

if TYPE_CHECKING:
    from kdsam.export.onnx_predictor import OnnxPredictor
    from kdsam.infer.dicomweb import Target
    from kdsam.infer.files import Prompts
    from kdsam.models.sam import KDSam

# argparse takes "-5,0,10,10" for an option; this lets negative coordinates through as values.
NEGATIVE_VALUES = re.compile(r"^-[\d.][\d.,eE+-]*$")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p._negative_number_matcher = NEGATIVE_VALUES  # argparse has no public hook for this
    p.add_argument(
        "--model",
        required=True,
        help="a MODEL (docs/models.md): teacher NAME[=CHECKPOINT], run folder, model.pt or ONNX export folder",
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument(
        "--image",
        type=path_or_target,
        help="one image (PNG/JPEG/TIFF, 8/16-bit; a DICOM slice), volume (.nii/.nii.gz, a DICOM series "
        "folder), CVPR24 challenge .npz case, or a PACS series: dicomweb:URL/studies/UID/series/UID (docs/pacs.md)",
    )
    src.add_argument(
        "--input",
        type=path_or_target,
        help="a folder of such files, each segmented into --out (a folder); or dicomweb:URL/studies/UID: each "
        "image series of a PACS study",
    )
    p.add_argument(
        "--box",
        action="append",
        default=[],
        metavar="X0,Y0,X1,Y1",
        help="2D box prompt in pixels of the original image (exclusive max); repeat for several objects",
    )
    p.add_argument(
        "--point",
        action="append",
        default=[],
        metavar="X,Y[,LABEL]",
        help="click prompt in pixels of the original image, LABEL 1 (positive, default) or 0 (negative); repeat "
        "for several clicks on one object, alone or with one --box",
    )
    p.add_argument(
        "--everything",
        action="store_true",
        help="no prompt: SAM's automatic mask generator on the whole 2D image; writes a 16-bit label map PNG",
    )
    p.add_argument(
        "--points-per-side",
        type=int,
        default=32,
        help="--everything's point grid (default 32, SAM's: 1024 prompts; fewer is faster on a CPU)",
    )
    p.add_argument(
        "--box3d",
        action="append",
        default=[],
        metavar="X0,Y0,Z0,X1,Y1,Z1",
        help="3D box for a volume: voxel indices along the file's first, second, third array axes (NIfTI i, j, k; "
        "DICOM column, row, slice), inclusive; repeat for several objects (box i -> label i + 1)",
    )
    p.add_argument(
        "--boxes",
        type=Path,
        help='JSON {"<file name or stem>": [[4 or 6 numbers], ...]} giving each file of --input its boxes',
    )
    p.add_argument(
        "--out",
        required=True,
        type=path_or_target,
        help="output file (PNG for an image, .nii.gz for a volume, .npz for a case; .dcm: a DICOM SEG of a DICOM "
        "input) or an existing folder to write <name>.png/.nii.gz/.npz into; with --input, the output folder; "
        "dicomweb:URL stores the DICOM SEG in a PACS (STOW-RS)",
    )
    p.add_argument(
        "--label-name",
        action="append",
        default=[],
        metavar="NAME",
        help="a DICOM SEG's segment names, one per box in order (repeat; default: label 1, label 2, ...)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        metavar="DATASET_JSON",
        help="name a DICOM SEG's segments from a dataset's dataset.json (nnU-Net or MSD): box K is label K",
    )
    p.add_argument(
        "--window",
        default="auto",
        help="intensities to 8 bits: auto (the DICOM's own window; CT soft tissue; else 0.5-99.5 percentiles), "
        "percentile, minmax, a CT preset (soft-tissue, lung, bone, brain) or LEVEL,WIDTH",
    )
    p.add_argument(
        "--batch-size", type=int, help="slices per image-encoder batch for volumes (default: 8 on a GPU, 1 on a CPU)"
    )
    p.add_argument("--overlay", type=Path, help="also write a picture: the mask tinted (a few slices of a volume)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    add_device_argument(p)
    p.add_argument(
        "--runtime",
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        help="for an ONNX export folder as --model: onnxruntime (fp32, default) or onnxruntime-int8",
    )
    p.add_argument(
        "--threads",
        type=int,
        help="CPU threads to use (default: every core); an export runs two slices of a volume at once, each "
        "on half of them",
    )


def path_or_target(text: str) -> Path | Target:
    """A local path, or a DICOMweb address `dicomweb:URL...` (a Path would fold its '//')."""
    from kdsam.infer.dicomweb import is_target, parse_target

    return parse_target(text) if is_target(text) else Path(text)


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


def _prompts(args: argparse.Namespace) -> Prompts:
    from kdsam.infer.files import Prompts

    boxes = np.array([parse_box(t) for t in args.box], dtype=np.float32).reshape(-1, 4)
    boxes3d = np.array([parse_box3d(t) for t in args.box3d], dtype=np.float32).reshape(-1, 6)
    points = np.array([parse_point(t) for t in args.point], dtype=np.float32).reshape(-1, 3)
    if args.everything and (len(boxes) or len(points) or len(boxes3d)):
        raise KdsamError("--everything takes no prompt: leave out --box, --point and --box3d")
    if args.points_per_side < 1:
        raise KdsamError("--points-per-side must be at least 1")
    return Prompts(boxes, boxes3d, points, args.points_per_side if args.everything else 0)


def _slice_by_slice(inputs: list[tuple[Path, str]]) -> bool:
    """Does any input run slice by slice (a volume, a 3D challenge case)?"""
    from kdsam.infer.challenge import is_3d_name
    from kdsam.infer.cvpr25 import is_cvpr25_file

    return any(
        kind == "volume" or (kind == "npz" and (is_3d_name(path.name) or is_cvpr25_file(path))) for path, kind in inputs
    )


def _load(args: argparse.Namespace, slices: bool) -> KDSam | OnnxPredictor:
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
    from kdsam.infer.files import output_name

    out = args.out
    if out.is_dir():
        return out / output_name(args.image, kind)
    name = out.name.lower()
    if name.endswith(".dcm") and kind != "npz":
        return out  # a DICOM SEG; run_file refuses non-DICOM inputs
    if kind == "volume" and not name.endswith((".nii", ".nii.gz")):
        raise KdsamError(f"--out {out}: a volume's mask is a NIfTI file; name it .nii.gz (or give a folder)")
    if kind == "npz" and not name.endswith(".npz"):
        raise KdsamError(f"--out {out}: a challenge case's answer is an .npz file (or give a folder)")
    if kind == "image" and name.endswith((".nii", ".nii.gz", ".npz")):
        raise KdsamError(f"--out {out}: a 2D image's mask is a PNG")
    return out


def run_one(args: argparse.Namespace) -> int:
    out, record = segment_one(args)
    print(summary(out, record))
    return 0


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
    prompts = _prompts(args)
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
    model = _load(args, _slice_by_slice([(args.image, kind)]))
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


def run_folder(args: argparse.Namespace) -> int:
    from kdsam.data.intensity import parse_window
    from kdsam.infer.box_file import prompts_for, read_box_file
    from kdsam.infer.folder import segment_share, share_of

    if not args.input.is_dir():
        raise KdsamError(f"--input {args.input}: not a folder")
    if args.out.exists() and not args.out.is_dir():
        raise KdsamError(f"--out {args.out}: with --input, --out is a folder")
    if args.out.resolve() == args.input.resolve():
        raise KdsamError(f"--out {args.out}: give another folder than --input (answers keep the cases' names)")
    if args.overlay:
        raise KdsamError("--overlay draws one case; leave it out with --input")
    window = parse_window(args.window)
    table = read_box_file(args.boxes) if args.boxes else None
    default = _prompts(args)
    share = share_of(args.input, args.out, args.overwrite)
    model = _load(args, _slice_by_slice(share.todo)) if share.todo else None
    failed, times = segment_share(
        model,
        share,
        args.out,
        lambda path: prompts_for(path, table, default),
        window,
        args.batch_size,
        lambda line: print(f"kdsam predict: skipped {line}", file=sys.stderr),
    )
    timed = [times[p.name] for p, _ in share.todo if p.name in times]
    mean = f"; {np.mean(timed):.2f} s per case" if timed else ""
    print(
        f"{args.out}: {len(share.todo) - len(failed)} segmented, {share.done_before} already done, "
        f"{len(failed)} skipped{mean} (seconds per case: {share.efficiency})"
    )
    return 1 if failed else 0


def run(args: argparse.Namespace) -> int:
    from kdsam.infer.dicomweb import Target

    if any(isinstance(v, Target) for v in (args.image, args.input, args.out)):
        from kdsam.commands.predict_pacs import run as run_pacs

        return run_pacs(args)
    return run_folder(args) if args.input is not None else run_one(args)
