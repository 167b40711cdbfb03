"""`kdsam predict`: segment an image, a volume or a challenge npz case from box prompts, or a folder of them.

2D images give a 0/255 PNG (the union of the per-box masks); volumes (NIfTI, MHA, NRRD, DICOM series
folders) give a label map on the input's grid (box i -> label i + 1) from 3D boxes, in the input's
format (MHA in, MHA out; NRRD in, NRRD out; NIfTI for NIfTI and DICOM); CVPR24 npz cases
give an npz of `segs`. Every output gets a JSON sidecar (kdsam.infer.files).

Exit codes: 0 every output written; 1 a folder run skipped some files (each named on one line of
stderr, whatever went wrong reading it, and counted in the summary; the others are written);
2 a mistake in the command or its one input (one line, nothing written); 130 interrupted.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.commands.options import add_device_argument
from kdsam.commands.predict_case import model_for, prompts_from, segment_one, slice_by_slice, summary
from kdsam.errors import KdsamError

if TYPE_CHECKING:
    from kdsam.infer.dicomweb import Target

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
        help="one image (PNG/JPEG/TIFF, 8/16-bit; a DICOM slice), volume (.nii/.nii.gz, .mha/.mhd, .nrrd/.nhdr, a "
        "DICOM series folder), CVPR24 challenge .npz case, or a PACS series: "
        "dicomweb:URL/studies/UID/series/UID (docs/pacs.md)",
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
        help="output file (PNG for an image, .nii.gz/.mha/.nrrd for a volume, .npz for a case; .dcm: a DICOM SEG of "
        "a DICOM input) or an existing folder to write <name>.png/.npz, or a volume's mask in its own format "
        "(<name>.nii.gz, .mha or .nrrd), into; with --input, the output folder; "
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


def run_one(args: argparse.Namespace) -> int:
    out, record = segment_one(args)
    print(summary(out, record))
    return 0


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
    default = prompts_from(args)
    share = share_of(args.input, args.out, args.overwrite)
    model = model_for(args, slice_by_slice(share.todo)) if share.todo else None
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
