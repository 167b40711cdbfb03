"""What the slice store costs and delivers (`kdsam bench-training --parts slices`): on a synthetic
CT set in the nnU-Net layout, the time and disk of converting every case once, and the slices per
second a DataLoader worker then delivers at the student's input size, read at random from the
memory-mapped store (and, separately, through the student's own preprocessing)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from kdsam.data.registry import open_dataset, volume_set
from kdsam.data.volumes.slices import VolumeOptions
from kdsam.data.volumes.synthetic import write_synthetic_ct
from kdsam.distill.items import preprocessor
from kdsam.models.student import build_student


class Slices(torch.utils.data.Dataset):
    """Slices decoded from the store at `max_side` (HxWx3 uint8), or with `input_size` also through
    a student's own preprocessing (its normalised, padded input tensor), as training reads them."""

    def __init__(self, dataset, input_size: int | None = None) -> None:
        self.dataset = dataset
        self.student = preprocessor(build_student(None, "resnet18", input_size)) if input_size else None

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> torch.Tensor:
        image = self.dataset[i].image
        return torch.from_numpy(image) if self.student is None else self.student.prepare(image)[0][0]


def per_worker_rate(items: torch.utils.data.Dataset, workers: int, batch_size: int) -> tuple[int, float]:
    """(items timed, items/s per worker), timed from the first batch on: worker start-up (a fresh
    process importing torch) is paid once per epoch, not per slice."""
    loader = torch.utils.data.DataLoader(items, batch_size=batch_size, num_workers=workers)
    n, start = 0, None
    for batch in loader:
        if start is None:
            start = time.perf_counter()
            continue
        n += len(batch)
    seconds = time.perf_counter() - start if start is not None else float("nan")
    return n, round(n / seconds / max(workers, 1), 1)


def _folder_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def slice_store_speed(
    root: Path, n_cases: int = 100, depth: int = 100, side: int = 512, input_size: int = 256,
    workers: int = 1, n_read: int = 2000, batch_size: int = 32,
) -> dict[str, Any]:  # fmt: skip
    """Fill time and size of the store for n_cases of side x side x depth, then slices/s per worker."""
    data = root / f"ct-{n_cases}x{depth}x{side}"
    start = time.perf_counter()
    if not (data / "dataset.json").is_file():
        write_synthetic_ct(data, n_cases=n_cases, shape=(side, side, depth))
    written = time.perf_counter() - start
    options = VolumeOptions(cache_dir=root / f"store-{time.time_ns()}")
    location = f"nnunet:{data}"
    start = time.perf_counter()
    volumes = volume_set(location, options)
    fill = time.perf_counter() - start
    dataset = open_dataset(location, volume=options, max_side=input_size)
    n = min(n_read, len(dataset))
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[:n].tolist()
    n_slices, slices_rate = per_worker_rate(torch.utils.data.Subset(Slices(dataset), order), workers, batch_size)
    inputs = torch.utils.data.Subset(Slices(dataset, input_size), order)
    n_inputs, inputs_rate = per_worker_rate(inputs, workers, batch_size)
    return {
        "what": "slice store: convert each case once, then random slices through a DataLoader",
        "cases": n_cases,
        "slices_per_case": depth,
        "slice_side": side,
        "source_mb": _folder_mb(data),
        "synthetic_data_written_s": round(written, 1),
        "fill_s": round(fill, 2),
        "fill_slices_per_s": round(len(dataset) / fill, 1),
        "store_mb": _folder_mb(options.cache_dir),
        "cases_stored": len(volumes.cases),
        "slice_px": input_size,
        "loader_workers": workers,
        "slices_timed": n_slices,
        "slices_per_s_per_worker": slices_rate,
        "target_slices_per_s_per_worker": 500,
        "student_inputs_timed": n_inputs,
        "student_inputs_per_s_per_worker": inputs_rate,
        "note": "slices: uint8 at slice_px from the store (random order); student inputs: also through the "
        "student's own preprocessing (resize, normalise, pad), which costs more than the store read",
    }
