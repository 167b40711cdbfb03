"""`kdsam demo`: the main job on built-in defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsam.commands.options import log_to_stderr
from kdsam.demo import DemoConfig, print_summary, run_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    parser.add_argument("--out", default="kdsam-demo", help="output folder (rerun to resume after Ctrl-C)")
    parser.add_argument("--n-images", type=int, default=d.n_images)
    parser.add_argument("--distill-epochs", type=int, default=d.distill_epochs)
    parser.add_argument("--finetune-epochs", type=int, default=d.finetune_epochs)
    parser.add_argument("--backbone", default=d.backbone)
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--prompt-mix", default=d.prompt_mix, help="stage 2's prompts (kdsam finetune --help)")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default=d.precision,
        help="teacher and student forwards in bf16 (a CPU with AVX512-BF16/AMX)",
    )


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    cfg = DemoConfig(
        n_images=args.n_images,
        distill_epochs=args.distill_epochs,
        finetune_epochs=args.finetune_epochs,
        backbone=args.backbone,
        input_size=args.input_size,
        seed=args.seed,
        prompt_mix=args.prompt_mix,
        precision=args.precision,
    )
    out = Path(args.out)
    print_summary(out, run_demo(out, cfg))
    return 0
