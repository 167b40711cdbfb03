"""The training commands' arguments (distill, finetune, cache): data splits, optimisation, precision
and the process group; kept apart from `kdsam.commands.options` so inference commands never import
the training stack."""

from __future__ import annotations

import argparse

from kdsam.commands.options import add_device_argument, add_volume_arguments, set_threads, volume_options
from kdsam.data import dataset_splits, open_dataset
from kdsam.data.dataset import Dataset
from kdsam.distill.process import DEFAULT_TIMEOUT_S, PRECISIONS, TrainingProcess, init_process
from kdsam.distill.trainer import FitConfig


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="KIND:PATH", help="KIND:PATH, e.g. kvasir:/data/Kvasir-SEG")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split and of training")
    parser.add_argument("--split-file", help="JSON {train,val,test: [names]} overriding the seeded split")
    parser.add_argument("--max-side", type=int, default=1024, help="decode images at most this large (speed)")
    add_volume_arguments(parser)


def add_background_argument(parser: argparse.ArgumentParser) -> None:
    from kdsam.distill.stage1 import BACKGROUND_SLICES

    parser.add_argument(
        "--background-slices",
        type=float,
        default=BACKGROUND_SLICES,
        metavar="F",
        help=f"volume datasets: the fraction of slices without foreground also distilled, embedding term only "
        f"(default {BACKGROUND_SLICES}; docs/volumes.md)",
    )


def train_val(args: argparse.Namespace) -> tuple[Dataset, Dataset]:
    """The train and val splits of --data (ISIC's official folders; a seeded split elsewhere)."""
    opts = {"seed": args.seed, "split_file": args.split_file, "max_side": args.max_side, "volume": volume_options(args)}
    return open_dataset(args.data, "train", **opts), open_dataset(args.data, "val", **opts)


def splits_of(args: argparse.Namespace) -> dict[str, list[str]]:
    return dataset_splits(args.data, args.seed, args.split_file, volume_options(args))


def add_fit_arguments(parser: argparse.ArgumentParser, defaults: FitConfig) -> None:
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=defaults.epochs)
    g.add_argument("--lr", type=float, default=defaults.lr)
    g.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    g.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per forward and rank")
    g.add_argument(
        "--accumulate",
        type=int,
        default=defaults.accumulate,
        metavar="A",
        help="forwards per optimizer step (gradient accumulation): global batch = batch size x A x ranks",
    )
    g.add_argument("--patience", type=int, default=defaults.patience, help="early stopping, in epochs")
    g.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's choice)")
    g.add_argument(
        "--workers", type=int, default=None, help="data loader processes per rank (default: 4 on CUDA, 0 on CPU)"
    )
    g.add_argument("--resume", action="store_true", help="continue the run from its last checkpoint")
    g.add_argument(
        "--checkpoint-minutes",
        type=float,
        default=defaults.checkpoint_minutes,
        metavar="M",
        help="also checkpoint mid-epoch every M minutes, resumable exactly (0: at epoch ends only)",
    )
    add_device_argument(parser)
    add_precision_argument(parser)
    parser.add_argument(
        "--dist-timeout",
        type=float,
        default=DEFAULT_TIMEOUT_S,
        metavar="S",
        help="under torchrun: seconds a rank waits for the others before all stop (default 1800)",
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast dtype of the teacher's and the student's forwards: auto = bf16 (else fp16) on CUDA, "
        "fp32 on CPU; bf16 on a CPU with AVX512-BF16/AMX runs about 2x faster (docs/training.md)",
    )


def process_of(args: argparse.Namespace) -> TrainingProcess:
    """This process's device and precision and, under torchrun, its place in the process group."""
    return init_process(args.device, args.dist_timeout, args.precision)


def fit_config(args: argparse.Namespace, process: TrainingProcess) -> FitConfig:
    set_threads(args.threads)
    workers = args.workers if args.workers is not None else (4 if process.device.type == "cuda" else 0)
    return FitConfig(
        epochs=args.epochs,
        lr=args.lr,
        weight_decay=args.weight_decay,
        batch_size=args.batch_size,
        accumulate=args.accumulate,
        patience=args.patience,
        seed=args.seed,
        workers=workers,
        checkpoint_minutes=args.checkpoint_minutes,
    )
