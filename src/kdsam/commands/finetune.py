"""`kdsam finetune`: stage 2."""

from __future__ import annotations

import argparse

from kdsam.commands.options import log_to_stderr
from kdsam.commands.train_options import (
    add_data_arguments,
    add_fit_arguments,
    fit_config,
    process_of,
    splits_of,
    train_val,
)
from kdsam.data.registry import require_labelled
from kdsam.distill.items import AUGMENTATIONS
from kdsam.distill.prompting import DEFAULT_MIX, parse_mix
from kdsam.distill.stage import default_fit
from kdsam.distill.stage2 import finetune


class RenamedOption(argparse.Action):
    """--run: refused in one line naming the spelling that works everywhere."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        parser.error("--run is now --run-dir (torchrun reads --run as its own --run-path); write --run-dir RUN")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--run-dir", dest="run", required=True, metavar="RUN", help="a run folder written by kdsam distill"
    )
    # the old spelling, hidden: without it argparse would take --run as an abbreviation of --run-dir,
    # which works alone and fails under torchrun (its --run-path)
    parser.add_argument("--run", action=RenamedOption, help=argparse.SUPPRESS)
    add_data_arguments(parser)
    parser.add_argument("--bce-weight", type=float, default=0.0, help="add BCE to the Dice loss")
    parser.add_argument("--train-encoder", action="store_true", help="also update the encoder (default frozen)")
    parser.add_argument(
        "--augment",
        default="",
        metavar="KINDS",
        help=f"comma-separated, from {','.join(AUGMENTATIONS)} (default none); box and mask move together",
    )
    parser.add_argument(
        "--prompt-mix",
        default=DEFAULT_MIX,
        metavar="MIX",
        help=f"first prompts to train on, KIND=WEIGHT from box, point, box+point (default {DEFAULT_MIX}); "
        "'box' alone is the boxes-only recipe",
    )
    parser.add_argument(
        "--max-clicks", type=int, default=2, help="simulated corrective clicks after the first prompt: 0..N (default 2)"
    )
    parser.add_argument("--cache-dir", help="frozen-encoder embedding cache (default $KDSAM_CACHE or ~/.cache/kdsam)")
    add_fit_arguments(parser, default_fit("finetune"))


def run(args: argparse.Namespace) -> int:
    log_to_stderr()
    process = process_of(args)
    cfg = fit_config(args, process)
    require_labelled(args.data, "kdsam finetune")
    train, val = train_val(args)
    finetune(
        args.run, train, val, bce_weight=args.bce_weight, train_encoder=args.train_encoder, cfg=cfg,
        resume=args.resume, splits=splits_of(args), process=process, cache_dir=args.cache_dir,
        augmentations=[a.strip() for a in args.augment.split(",") if a.strip()],
        prompt_mix=parse_mix(args.prompt_mix, args.max_clicks),
    )  # fmt: skip
    if not process.is_main:
        return 0
    print(f"fine-tuned student written to {args.run}/model.pt")
    return 0
