"""`kdsam data inspect KIND:PATH`: counts, image sizes and unreadable files of a dataset folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kdsam.data.registry import ADAPTERS

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser(
        "inspect",
        help="decode every sample once; report counts per split and class, image sizes and bad files",
        description="Decode every sample once and report counts per split and class, image sizes and bad files.",
    )
    p.add_argument("location", metavar="KIND:PATH", help=f"KIND:PATH, KIND one of {', '.join(ADAPTERS)}")
    p.add_argument("--json", type=Path, metavar="OUT", help="also write the report as JSON here")
    p.add_argument("--seed", type=int, default=0, help="seed of the split where a dataset has no official one")
    p.add_argument("--split-file", type=Path, metavar="F", help='JSON {"train": [names], "val": ..., "test": ...}')
    p.add_argument("--cache-dir", help="where volume datasets' slice stores live (default $KDSAM_CACHE)")
    from kdsam.commands.options import add_volume_arguments

    add_volume_arguments(p)


def run(args: argparse.Namespace) -> int:
    from kdsam.commands.options import volume_options
    from kdsam.data.inspect import format_report, inspect_dataset
    from kdsam.utils.atomic import write_json

    report = inspect_dataset(args.location, seed=args.seed, split_file=args.split_file, volume=volume_options(args))
    print(format_report(report))
    if args.json:
        write_json(args.json, report)
        print(f"report written to {args.json}")
    if report["n_ok"] == 0:
        print(f"kdsam data: error: no sample of {args.location} could be read", file=sys.stderr)
        return 1
    return 0
