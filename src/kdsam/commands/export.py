"""`kdsam export`: a model's image encoder and box decoder as ONNX files, an INT8 encoder, and the preprocessing."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsam.errors import KdsamError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from kdsam.export.onnx import DEFAULT_OPSET
    from kdsam.export.quantize import DEFAULT_CALIBRATION_IMAGES

    p.add_argument(
        "--model", required=True, help="a MODEL (docs/models.md): teacher NAME[=CHECKPOINT], run folder or model.pt"
    )
    p.add_argument("--out", required=True, type=Path, help="output folder for the .onnx files and their JSON")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export in --out")
    p.add_argument(
        "--calibration-data",
        metavar="KIND:PATH",
        help="images the INT8 encoder is calibrated on: a folder of image files or a dataset KIND:PATH "
        "(default: built-in synthetic images; your own data quantizes better)",
    )
    p.add_argument(
        "--calibration-images",
        type=int,
        default=DEFAULT_CALIBRATION_IMAGES,
        help=f"how many images to calibrate on (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    p.add_argument("--no-int8", action="store_true", help="skip the INT8 encoder (fp32 graphs only)")
    p.add_argument(
        "--external-data",
        choices=["auto", "always"],
        default="auto",
        help="keep the encoder's weights in a .data file beside it: 'auto' when over 2 GB (SAM ViT-H)",
    )


def run(args: argparse.Namespace) -> int:
    from kdsam.export.onnx import CONFIG_FILE, export_onnx
    from kdsam.export.quantize import calibration_from
    from kdsam.models.loading import load_model

    if args.out.exists() and not args.out.is_dir():
        raise KdsamError(f"--out {args.out}: a file; an export is a folder of files (give a folder's name)")
    if (args.out / CONFIG_FILE).exists() and not args.overwrite:
        raise KdsamError(f"{args.out} already holds an export: pass --overwrite to replace it, or choose another --out")
    calibration = None if args.no_int8 else calibration_from(args.calibration_data, args.calibration_images)
    external = True if args.external_data == "always" else None
    model = load_model(args.model, ("teacher", "student", "saved"), "kdsam export")
    config = export_onnx(model, args.out, args.opset, external, calibration)
    size = config["img_size"]
    print(
        f"exported {config['model']} to {args.out}: {config['encoder']} (1x3x{size}x{size} -> 1x256x64x64"
        f"{', weights in ' + config['encoder'] + '.data' if config['external_data'] else ''}), "
        f"{config['decoder']} (N boxes -> Nx1x256x256 logits), {CONFIG_FILE}"
    )
    if "int8" in config:
        int8 = config["int8"]
        print(f"INT8 encoder {int8['encoder']}: calibrated on {int8['calibration']}")
        print(f"INT8 decoders {int8['decoder']}, {int8['prompt_decoder']}: {int8['decoder_scheme']}")
    return 0
