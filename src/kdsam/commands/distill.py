"""`kdsam distill`: stage 1."""

from __future__ import annotations

import argparse
from dataclasses import replace

from kdsam.commands.options import log_to_stderr, volume_options
from kdsam.commands.train_options import (
    add_background_argument,
    add_data_arguments,
    add_fit_arguments,
    fit_config,
    process_of,
    splits_of,
    train_val,
)
from kdsam.data.registry import is_volume_location, volume_set
from kdsam.distill.stage import default_fit
from kdsam.distill.stage1 import PERCEPTUAL, distill
from kdsam.models.loading import load_model


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="litemedsam", metavar="NAME[=CHECKPOINT]")
    add_data_arguments(parser)
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder to create")
    parser.add_argument("--backbone", default="resnet50", help="any timm model name")
    parser.add_argument("--input-size", type=int, default=512, help="student input side (multiple of 32)")
    parser.add_argument("--backbone-weights", metavar="PATH", help="local ImageNet weights for the backbone")
    parser.add_argument("--perceptual", choices=PERCEPTUAL, default="decoder")
    parser.add_argument("--perceptual-weight", type=float, default=1.0)
    parser.add_argument(
        "--perceptual-items", type=int, default=4, help="images per batch that also get the perceptual term"
    )
    parser.add_argument("--vgg-weights", metavar="PATH", help="torchvision vgg16-397923af.pth for --perceptual vgg16")
    parser.add_argument("--cache-dir", help="teacher embedding cache (default $KDSAM_CACHE or ~/.cache/kdsam)")
    parser.add_argument("--cache-batch-size", type=int, default=8, help="images per teacher forward when filling it")
    add_background_argument(parser)
    add_fit_arguments(parser, default_fit("distill"))
    parser.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on GPUs: BatchNorm statistics over the global batch (SyncBatchNorm), not per rank",
    )


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    process = process_of(args)
    cfg = replace(fit_config(args, process), sync_bn=args.sync_bn)
    teacher = load_model(args.teacher, ("teacher",), "--teacher")
    train, val = train_val(args)
    distill(
        teacher,
        train,
        val,
        args.out,
        backbone=args.backbone,
        input_size=args.input_size,
        backbone_weights=args.backbone_weights,
        perceptual=args.perceptual,
        perceptual_weight=args.perceptual_weight,
        perceptual_items=args.perceptual_items,
        vgg_weights=args.vgg_weights,
        cache_dir=args.cache_dir,
        cfg=cfg,
        resume=args.resume,
        splits=splits_of(args),
        extra_config={"split_seed": args.seed, "split_file": args.split_file},
        process=process,
        cache_batch_size=args.cache_batch_size,
        background=args.background_slices,
        intensity=_intensity(args),
    )
    if not process.is_main:
        return 0
    print(f"student written to {args.out}/model.pt; next: kdsam finetune --run-dir {args.out} --data {args.data}")
    return 0


def _intensity(args: argparse.Namespace) -> dict | None:
    """How a volume dataset's voxels become slices, for the student to keep: --window, --channel and
    the modality its dataset.json names (a NIfTI names none, so predict needs it to choose as here)."""
    if not is_volume_location(args.data):
        return None
    options = volume_options(args)
    return {"window": options.window, "channel": options.channel, "modality": volume_set(args.data, options).modality}
