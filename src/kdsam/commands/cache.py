"""`kdsam cache`: compute a teacher's embeddings of a dataset ahead of `kdsam distill` (resumable;
under torchrun each rank takes a share)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from kdsam.commands.options import add_device_argument, add_volume_arguments, log_to_stderr, volume_options
from kdsam.commands.train_options import add_background_argument, add_precision_argument
from kdsam.data import open_dataset
from kdsam.distill.process import DEFAULT_TIMEOUT_S, init_process
from kdsam.errors import KdsamError
from kdsam.models.loading import load_model
from kdsam.models.spec import parse_model, require_kind
from kdsam.models.teachers import build_architecture
from kdsam.utils.atomic import write_json

log = logging.getLogger("kdsam")
SPLITS = ("train", "val", "test", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--teacher", default="litemedsam", metavar="NAME[=CHECKPOINT]")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="TIMING ONLY: the teacher's architecture with random weights (no checkpoint needed); "
        "its entries are keyed by those weights and never stand in for the pretrained teacher's",
    )
    parser.add_argument("--data", required=True, metavar="KIND:PATH", help="KIND:PATH, e.g. kvasir:/data/Kvasir-SEG")
    parser.add_argument(
        "--split", default="train,val", help=f"comma-separated from {', '.join(SPLITS)} (default train,val)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split")
    parser.add_argument("--split-file", help="JSON {train,val,test: [names]} overriding the seeded split")
    parser.add_argument("--max-side", type=int, default=1024, help="decode at most this large (as distill does)")
    parser.add_argument("--cache-dir", help="default $KDSAM_CACHE or ~/.cache/kdsam (as distill)")
    parser.add_argument("--batch-size", type=int, default=8, help="images per teacher forward")
    parser.add_argument("--no-logits", action="store_true", help="embeddings only (--perceptual vgg16 or none)")
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--dist-timeout", type=float, default=DEFAULT_TIMEOUT_S, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path, help='write {"images", "computed", "reused", "seconds", ...} here')
    add_volume_arguments(parser)
    add_background_argument(parser)


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    splits = [s.strip() for s in args.split.split(",") if s.strip()]
    bad = [s for s in splits if s not in SPLITS]
    if bad or not splits:
        raise KdsamError(f"--split {args.split}: choose from {', '.join(SPLITS)}")
    if args.batch_size < 1:
        raise KdsamError(f"--batch-size {args.batch_size}: at least 1")
    process = init_process(args.device, args.dist_timeout, args.precision)
    spec = require_kind(parse_model(args.teacher), ("teacher",), "--teacher")
    if args.random_weights:
        if spec.checkpoint:
            raise KdsamError("--random-weights times the architecture only; drop the =CHECKPOINT")
        log.warning("cache: %s with RANDOM weights, for timing only; not a pretrained teacher", spec.name)
        teacher = build_architecture(spec.name).eval().requires_grad_(False)
    else:
        teacher = load_model(spec)
    opts = {"seed": args.seed, "split_file": args.split_file, "max_side": args.max_side, "volume": volume_options(args)}
    datasets = [open_dataset(args.data, None if s == "all" else s, **opts) for s in splits]  # fills the slice store
    from kdsam.distill.fill import fill_teacher_cache

    report = fill_teacher_cache(
        teacher,
        datasets,
        process,
        args.cache_dir,
        args.batch_size,
        not args.no_logits,
        args.background_slices,
        args.seed,
    )
    report = {"data": args.data, "splits": splits, **report}
    if not process.is_main:
        return 0
    print(json.dumps(report))
    if args.json:
        write_json(args.json, report)
    return 0
