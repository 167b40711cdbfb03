"""`kdsam export`: a model's image encoder and box decoder as two ONNX files, plus its preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsam.errors import KdsamError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kdsam.export.onnx import DEFAULT_OPSET

    p.add_argument(
        "--model", required=True, help="a MODEL (docs/models.md): teacher NAME[=CHECKPOINT], run folder or model.pt"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for the .onnx files and their JSON")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")


def run(args: argparse.Namespace) -> int:
    from kdsam.export.onnx import CONFIG_FILE, export_onnx
    from kdsam.models.loading import load_model

    if (args.out / CONFIG_FILE).exists() and not args.overwrite:
        raise KdsamError(f"{args.out} already holds an export: pass --overwrite to replace it, or choose another --out")
    model = load_model(args.model, ("teacher", "student", "saved"), "kdsam export")
    config = export_onnx(model, args.out, args.opset)
    print(
        f"exported {config['model']} to {args.out}: {config['encoder']} (1x3x{config['img_size']}x{config['img_size']} "
        f"-> 1x256x64x64), {config['decoder']} (N boxes -> Nx1x256x256 logits), {CONFIG_FILE}"
    )
    return 0
