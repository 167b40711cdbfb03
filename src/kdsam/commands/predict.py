"""`kdsam predict`: segment one image from box prompts; the union of the per-box masks as a 0/255 PNG."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from kdsam.errors import KdsamError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="run folder, model.pt, teacher:NAME[=CHECKPOINT], or an ONNX export folder"
    )
    p.add_argument("--image", required=True, type=Path, help="image file (any greyscale, RGB, RGBA or 16-bit kind)")
    p.add_argument(
        "--box",
        action="append",
        required=True,
        metavar="X0,Y0,X1,Y1",
        help="box prompt in pixels of the original image (exclusive max); repeat for several objects",
    )
    p.add_argument("--out", required=True, type=Path, help="mask PNG to write (0 background, 255 object)")
    p.add_argument("--overlay", type=Path, help="also write the image with the mask tinted and the boxes drawn")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--device", help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--runtime",
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        help="for an ONNX export folder as --model: onnxruntime (fp32, default) or onnxruntime-int8",
    )


def parse_box(text: str) -> list[float]:
    """'X0,Y0,X1,Y1' -> four floats with X0 < X1 and Y0 < Y1, or one line saying what is wrong."""
    try:
        box = [float(v) for v in text.split(",")]
    except ValueError:
        box = []
    if len(box) != 4 or not all(np.isfinite(box)):
        raise KdsamError(f"--box {text!r}: expected four numbers X0,Y0,X1,Y1")
    if box[0] >= box[2] or box[1] >= box[3]:
        raise KdsamError(f"--box {text!r}: X0 must be less than X1 and Y0 less than Y1")
    return box


def check_inside(boxes: np.ndarray, texts: list[str], shape: tuple[int, int]) -> None:
    """Refuse boxes reaching outside the image: a typo there would silently segment the wrong place."""
    h, w = shape
    for (x0, y0, x1, y1), text in zip(boxes, texts, strict=True):
        if x0 < 0 or y0 < 0 or x1 > w or y1 > h:
            raise KdsamError(f"--box {text!r} reaches outside the {w}x{h} image (X in 0..{w}, Y in 0..{h})")


def refuse_existing(paths: list[Path], overwrite: bool) -> None:
    """Never replace a user's file by accident: existing outputs need --overwrite."""
    for path in paths:
        if path.exists() and not overwrite:
            raise KdsamError(f"{path} exists: pass --overwrite to replace it, or choose another path")


def run(args: argparse.Namespace) -> int:
    from kdsam.data.imageio import read_image, write_png
    from kdsam.models.loading import load_predictor
    from kdsam.report.overlays import draw_boxes, overlay

    outputs = [args.out] + ([args.overlay] if args.overlay else [])
    refuse_existing(outputs, args.overwrite)
    boxes = np.array([parse_box(t) for t in args.box], dtype=np.float32)
    image = read_image(args.image)
    check_inside(boxes, args.box, image.shape[:2])
    predictor = load_predictor(args.model, args.runtime, args.device)
    predictor.set_image(image)
    mask = predictor.segment(boxes)
    write_png(args.out, mask)
    if args.overlay:
        write_png(args.overlay, draw_boxes(overlay(image, mask), boxes))
    print(f"{args.out}: {int(mask.sum())} object pixels ({mask.mean():.1%}) from {len(boxes)} box(es)")
    return 0
