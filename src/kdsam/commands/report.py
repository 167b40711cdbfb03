"""`kdsam report`: one HTML/markdown page from runs, evaluations and benchmarks (see kdsam.report.page)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="RUN_OR_METRICS",
        help="run folders, evaluation metrics.json files or folders, benchmark JSONs, demo report.json, "
        "folders of overlay PNGs",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for report.html and report.md")
    parser.add_argument("--title", default="kdsam report")


def run(args: argparse.Namespace) -> int:
    from kdsam.report.page import make_report

    written = make_report(args.inputs, args.out, args.title)
    for path in written.values():
        print(f"wrote {path}")
    return 0
