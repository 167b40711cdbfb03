"""`kdsam demo`: the main job on built-in defaults."""

from __future__ import annotations

import argparse
from pathlib import Path

from kdsam.commands.options import log_to_stderr
from kdsam.demo import DemoConfig, print_summary, run_demo
from kdsam.demo_volumes import VolumeDemoConfig, run_volume_demo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = DemoConfig()
    parser.add_argument("--out", default="kdsam-demo", help="output folder (rerun to resume after Ctrl-C)")
    parser.add_argument("--n-images", type=int, default=d.n_images)
    v = VolumeDemoConfig()
    parser.add_argument(
        "--distill-epochs", type=int, help=f"default {d.distill_epochs} ({v.distill_epochs} with --volumes)"
    )
    parser.add_argument(
        "--finetune-epochs", type=int, help=f"default {d.finetune_epochs} ({v.finetune_epochs} with --volumes)"
    )
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
    parser.add_argument(
        "--volumes",
        action="store_true",
        help="the same on a synthetic CT set in the nnU-Net layout, scored in 3D (default --out kdsam-demo-volumes)",
    )


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    if args.volumes:
        return _volumes(args)
    cfg = DemoConfig(
        n_images=args.n_images,
        distill_epochs=_given(args.distill_epochs, DemoConfig.distill_epochs),
        finetune_epochs=_given(args.finetune_epochs, DemoConfig.finetune_epochs),
        backbone=args.backbone,
        input_size=args.input_size,
        seed=args.seed,
        prompt_mix=args.prompt_mix,
        precision=args.precision,
    )
    out = Path(args.out)
    print_summary(out, run_demo(out, cfg))
    return 0


def _given(value: int | None, default: int) -> int:
    return default if value is None else value


def _volumes(args: argparse.Namespace) -> int:
    cfg = VolumeDemoConfig(
        distill_epochs=_given(args.distill_epochs, VolumeDemoConfig.distill_epochs),
        finetune_epochs=_given(args.finetune_epochs, VolumeDemoConfig.finetune_epochs),
        backbone=args.backbone,
        input_size=args.input_size,
        seed=args.seed,
        prompt_mix=args.prompt_mix,
    )
    out = Path("kdsam-demo-volumes" if args.out == "kdsam-demo" else args.out)
    report = run_volume_demo(out, cfg)
    print(report["table"])
    for name in ("report.json", "report.md", "report.html", "slices.png"):
        print(f"  {out / name}")
    return 0
