"""Arguments shared by several commands (not a command itself)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from kdsam.data import dataset_splits, open_dataset
from kdsam.data.dataset import Dataset
from kdsam.data.intensity import parse_window
from kdsam.data.volumes.slices import VolumeOptions
from kdsam.distill.runtime import DEFAULT_TIMEOUT_S, PRECISIONS, Runtime, init_runtime
from kdsam.distill.trainer import FitConfig
from kdsam.errors import KdsamError
from kdsam.utils.device import resolve_device as resolve_device  # shared with evaluate and predict


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, metavar="SPEC", help="KIND:PATH, e.g. kvasir:/data/Kvasir-SEG")
    parser.add_argument("--seed", type=int, default=0, help="seed of the train/val/test split and of training")
    parser.add_argument("--split-file", help="JSON {train,val,test: [names]} overriding the seeded split")
    parser.add_argument("--max-side", type=int, default=1024, help="decode images at most this large (speed)")
    add_volume_arguments(parser)


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("volume datasets (nnunet:, msd:, npz:, images:)")
    g.add_argument("--channel", type=int, default=0, help="channel of multi-modal cases (default 0)")
    g.add_argument(
        "--window",
        default="auto",
        help="intensity mapping of CT/MR voxels to 8 bits, as kdsam predict's: auto (the dataset's modality: CT "
        "soft tissue, others MedSAM's percentiles), a preset, L,W, percentile or minmax",
    )


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


def volume_options(args: argparse.Namespace) -> VolumeOptions:
    """How volume specs become slices; the slice store lives beside the embedding cache."""
    parse_window(args.window)  # refused here, before any case is read
    cache = getattr(args, "cache_dir", None)
    return VolumeOptions(args.channel, args.window, Path(cache) if cache else None)


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


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="auto",
        help="autocast dtype of the teacher's and the student's forwards: auto = bf16 (else fp16) on CUDA, "
        "fp32 on CPU; bf16 on a CPU with AVX512-BF16/AMX runs about 2x faster (docs/training.md)",
    )


def runtime_of(args: argparse.Namespace) -> Runtime:
    """This process's device and precision and, under torchrun, its place in the process group."""
    return init_runtime(args.device, args.dist_timeout, args.precision)


def set_threads(threads: int | None) -> None:
    """--threads N: torch's CPU threads (None: torch's choice); 0 or less is one line, not torch's
    RuntimeError."""
    if check_threads(threads) is not None:
        torch.set_num_threads(threads)


def check_threads(threads: int | None) -> int | None:
    """--threads as given, when it is None (torch's choice) or at least 1; else one line."""
    if threads is not None and threads < 1:
        raise KdsamError(f"--threads {threads}: give a number of CPU threads of at least 1 (or leave it out)")
    return threads


def fit_config(args: argparse.Namespace, rt: Runtime) -> FitConfig:
    set_threads(args.threads)
    workers = args.workers if args.workers is not None else (4 if rt.device.type == "cuda" else 0)
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


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged, not when the handler was made (a
    command run twice in one process, as in tests, must not write to a stream closed since)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def log_to_stderr() -> None:
    """Progress lines for people (once per process, however often a command runs); run folders
    also get them in log.txt."""
    logger = logging.getLogger("kdsam")
    if not any(isinstance(h, _CurrentStderr) for h in logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)
