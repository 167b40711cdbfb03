"""Arguments shared by several commands (not a command itself), for inference and training alike.

Nothing here imports torch or the training stack at import time: `kdsam predict`, `evaluate` and
`serve` import this module, and their `--help` stays fast. The training commands' own arguments
are in `kdsam.commands.train_options`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from kdsam.errors import KdsamError

if TYPE_CHECKING:
    from kdsam.data.volumes.slices import VolumeOptions


def add_volume_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("volume datasets (nnunet:, msd:, npz:, images:)")
    g.add_argument("--channel", type=int, default=0, help="channel of multi-modal cases (default 0)")
    g.add_argument(
        "--window",
        default="auto",
        help="intensity mapping of CT/MR voxels to 8 bits, as kdsam predict's: auto (the dataset's modality: CT "
        "soft tissue, others MedSAM's percentiles), a preset, L,W, percentile or minmax",
    )


def volume_options(args: argparse.Namespace) -> VolumeOptions:
    """How volume locations become slices; the slice store lives beside the embedding cache."""
    from kdsam.data.intensity import parse_window
    from kdsam.data.volumes.slices import VolumeOptions

    parse_window(args.window)  # refused here, before any case is read
    cache = getattr(args, "cache_dir", None)
    return VolumeOptions(args.channel, args.window, Path(cache) if cache else None)


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device", default="auto", metavar="DEVICE", help="auto (CUDA when present), cpu, cuda or cuda:N"
    )


def set_threads(threads: int | None) -> None:
    """--threads N: torch's CPU threads (None: torch's choice); 0 or less is one line, not torch's
    RuntimeError."""
    if check_threads(threads) is not None:
        import torch

        torch.set_num_threads(threads)


def check_threads(threads: int | None) -> int | None:
    """--threads as given, when it is None (torch's choice) or at least 1; else one line."""
    if threads is not None and threads < 1:
        raise KdsamError(f"--threads {threads}: give a number of CPU threads of at least 1 (or leave it out)")
    return threads


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
