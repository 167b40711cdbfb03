"""`kdsam bench-training`: ranks, teacher cache and peak memory of training, in one JSON report."""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from kdsam.errors import KdsamError

PARTS = ("scaling", "cache", "rss", "precision", "decode", "slices")


def _ints(text: str) -> list[int]:
    return [int(t) for t in text.split(",") if t.strip()]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated from {', '.join(PARTS)}")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--processes", default="1,2", help="scaling: process counts (torchrun)")
    parser.add_argument("--scaling-images", type=int, default=32, help="scaling: training images")
    parser.add_argument("--sizes", default="80,320", help="rss: training-set sizes (images, or cases)")
    parser.add_argument(
        "--rss-data", choices=("2d", "volumes"), default="2d", help="rss: synthetic 2D images or CT cases"
    )
    parser.add_argument("--teachers", default="litemedsam", help="cache: comma-separated teacher names")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="cache: time the teachers' architectures with RANDOM weights (labelled so; timing only)",
    )
    parser.add_argument("--cache-images", type=int, default=16, help="cache: images to embed per teacher")
    parser.add_argument("--student", default="resnet18", help="timm backbone of the student")
    parser.add_argument("--input-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=8, help="global batch (scaling, rss); cache batch")
    parser.add_argument(
        "--slice-set",
        default="100,100,512",
        metavar="CASES,DEPTH,SIDE",
        help="slices: the synthetic CT set (default 100 cases of 100 slices of 512x512)",
    )
    parser.add_argument("--workers", type=int, default=1, help="slices: DataLoader workers")
    parser.add_argument(
        "--rounds", type=int, help="precision, decode: interleaved timed rounds (default 5 and 10; medians reported)"
    )
    parser.add_argument("--work", type=Path, help="folder for data, caches and runs (default: a temporary one)")
    parser.add_argument("--json", type=Path, help="write the report here")


def run(args: argparse.Namespace) -> int:
    from kdsam.bench.training import cache_speed, decode_speed, peak_rss, precision_speed, stage1_scaling
    from kdsam.utils.atomic import write_json

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if not parts or set(parts) - set(PARTS):
        raise KdsamError(f"--parts {args.parts}: choose from {', '.join(PARTS)}")
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    common = {"student": args.student, "input_size": args.input_size, "device": args.device}
    rounds = {"rounds": args.rounds} if args.rounds else {}
    report = {"host": {"cpus": os.cpu_count(), "machine": platform.machine(), "load_average_start": os.getloadavg()}}
    with tempfile.TemporaryDirectory() as tmp:
        root = args.work or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        if "scaling" in parts:
            report["stage1_scaling"] = stage1_scaling(_ints(args.processes), root=root, n_train=args.scaling_images,
                                                      global_batch=args.batch_size, **common)  # fmt: skip
            print(json.dumps(report["stage1_scaling"]))
        if "cache" in parts:
            report["cache"] = cache_speed(teachers, root=root, n_images=args.cache_images, device=args.device,
                                          random_weights=args.random_weights, batch_size=args.batch_size)  # fmt: skip
            print(json.dumps(report["cache"]))
        if "rss" in parts:
            report["peak_rss"] = peak_rss(_ints(args.sizes), root=root, batch_size=args.batch_size, data=args.rss_data,
                                          **common)  # fmt: skip
            print(json.dumps(report["peak_rss"]))
        if "precision" in parts:
            report["precision"] = precision_speed(batch_size=args.batch_size, teachers=teachers,
                                                  random_weights=args.random_weights, **rounds, **common)  # fmt: skip
            print(json.dumps(report["precision"]))
        if "decode" in parts:
            report["decode"] = decode_speed(teachers=teachers, batch_size=args.batch_size, device=args.device, **rounds)
            print(json.dumps(report["decode"]))
        if "slices" in parts:
            from kdsam.bench.slices import slice_store_speed

            cases, depth, side = _ints(args.slice_set)
            report["slices"] = slice_store_speed(root, cases, depth, side, args.input_size, args.workers)
            print(json.dumps(report["slices"]))
    report["host"]["load_average_end"] = os.getloadavg()
    if args.json:
        write_json(args.json, report)
        print(f"wrote {args.json}")
    return 0
