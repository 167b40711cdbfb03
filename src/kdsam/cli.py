"""`kdsam <command>`: parses arguments and hands over to kdsam.commands.<command>.

Each command module defines `help`, `add_arguments(parser)` and `run(args) -> int`; they are
imported only when chosen, so `kdsam --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from kdsam.errors import KdsamError

COMMANDS = {
    "demo": "distil the bundled LiteMedSAM teacher on synthetic data and report, end to end",
    "distill": "stage 1: train a student encoder toward a teacher's embeddings",
    "finetune": "stage 2: fine-tune the student's mask decoder on ground-truth masks",
    "cache": "compute a teacher's embeddings of a dataset ahead of distill (resumable, shardable)",
    "evaluate": "score a model (or saved predictions) on a dataset",
    "predict": "segment an image, a volume (3D box) or a folder of them (CVPR24 npz too) from box prompts",
    "data": "inspect a dataset folder",
    "bench": "time and size models side by side",
    "bench-training": "time training at scale: ranks, teacher cache, peak memory against dataset size",
    "report": "one HTML/markdown page from runs, evaluations and benchmarks",
    "export": "export a model to ONNX",
    "serve": "serve segmentation over HTTP, with an interactive page in the browser",
}


def _module(name: str):
    return importlib.import_module(f"kdsam.commands.{name.replace('-', '_')}")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kdsam", description="Distil Segment Anything for medical images.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _module(name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    try:
        return int(_module(args.command).run(args) or 0)
    except KdsamError as err:
        print(f"kdsam {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"kdsam {args.command}: interrupted; finished outputs and checkpoints are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
