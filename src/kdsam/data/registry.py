"""Dataset specs (`KIND:PATH`) -> datasets. Adding a layout is one entry in ADAPTERS."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kdsam.data.busi import busi_records
from kdsam.data.dataset import Dataset, Record, require_unique_names, union_of_masks
from kdsam.data.folder import folder_records
from kdsam.data.hc18 import filled_head, hc18_records
from kdsam.data.isic2017 import isic2017_records
from kdsam.data.kvasir import kvasir_records
from kdsam.data.splits import SPLITS, make_split, read_split_file
from kdsam.data.synthetic import write_synthetic
from kdsam.errors import KdsamError


@dataclass(frozen=True)
class Adapter:
    """One on-disk layout. `records` lists it; `official_splits` means records carry meta["split"]."""

    records: Callable[[Path], list[Record]]
    read_target: Callable[[Record], np.ndarray] = union_of_masks
    official_splits: bool = False
    description: str = ""


def _synthetic_records(root: Path) -> list[Record]:
    """`synthetic:PATH`: the built-in generator's data, written to PATH on first use."""
    if not (root / "images").is_dir():
        write_synthetic(root)
    return folder_records(root)


ADAPTERS: dict[str, Adapter] = {
    "folder": Adapter(folder_records, description="images/ + masks/ matched by file stem"),
    "synthetic": Adapter(_synthetic_records, description="built-in synthetic data, generated into PATH"),
    "kvasir": Adapter(kvasir_records, description="Kvasir-SEG: images/ + masks/ (JPEG)"),
    "isic2017": Adapter(
        isic2017_records, official_splits=True, description="ISIC 2017 Part 1: the official split folders"
    ),
    "hc18": Adapter(
        hc18_records, read_target=filled_head, description="HC18: training_set/ with ellipse outlines, filled"
    ),
    "busi": Adapter(busi_records, description="BUSI: Dataset_BUSI_with_GT/{benign,malignant,normal}/"),
}


def parse_spec(spec: str) -> tuple[str, Path]:
    kind, sep, path = spec.partition(":")
    if not sep or not path:
        raise KdsamError(f"dataset spec {spec!r}: write KIND:PATH with KIND one of {', '.join(ADAPTERS)}")
    if kind not in ADAPTERS:
        raise KdsamError(f"dataset spec {spec!r}: unknown kind {kind!r}; choose one of {', '.join(ADAPTERS)}")
    root = Path(path).expanduser()
    if kind != "synthetic" and not root.is_dir():
        raise KdsamError(f"{root}: dataset folder not found ({kind}: {ADAPTERS[kind].description})")
    return kind, root


def _records(kind: str, root: Path) -> list[Record]:
    return require_unique_names(ADAPTERS[kind].records(root))


def dataset_splits(spec: str, seed: int = 0, split_file: str | Path | None = None) -> dict[str, list[str]]:
    """train/val/test sample names: the official folders where a dataset has them, a split file
    when given, else a seeded split of the labelled images."""
    kind, root = parse_spec(spec)
    adapter = ADAPTERS[kind]
    records = _records(kind, root)
    if split_file is not None:
        return read_split_file(split_file)
    if adapter.official_splits:
        return {s: sorted(r.name for r in records if r.meta.get("split") == s) for s in SPLITS}
    labelled = [r.name for r in records if r.masks]
    return make_split(labelled, seed)


def open_dataset(
    spec: str,
    split: str | None = None,
    *,
    seed: int = 0,
    split_file: str | Path | None = None,
    max_side: int | None = None,
) -> Dataset:
    """The samples of `spec`, all labelled ones (split=None) or one of train/val/test."""
    kind, root = parse_spec(spec)
    adapter = ADAPTERS[kind]
    records = _records(kind, root)
    if split is None:
        chosen = records
    else:
        if split not in SPLITS:
            raise KdsamError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        names = set(dataset_splits(spec, seed, split_file)[split])
        chosen = [r for r in records if r.name in names]
    return Dataset(spec, chosen, adapter.read_target, split, max_side)
