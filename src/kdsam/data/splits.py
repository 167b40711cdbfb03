"""Deterministic train/val/test splits, stored beside every run so evaluation never leaks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from kdsam.errors import KdsamError

SPLITS = ("train", "val", "test")


def make_split(
    names: Sequence[str], seed: int = 0, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> dict[str, list[str]]:
    """Seeded split by a hash of (seed, name): stable when images are added or listed in another order."""
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise KdsamError(f"split fractions {fractions} must add up to 1")
    ranked = sorted(names, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    n = len(ranked)
    n_test = round(n * fractions[2]) if n >= 3 else 0
    n_val = round(n * fractions[1]) if n >= 3 else 0
    if n >= 3:
        n_test, n_val = max(n_test, 1), max(n_val, 1)
    test, val, train = ranked[:n_test], ranked[n_test : n_test + n_val], ranked[n_test + n_val :]
    return {"train": sorted(train), "val": sorted(val), "test": sorted(test)}


def read_split_file(path: str | Path) -> dict[str, list[str]]:
    """A JSON file {"train": [names], "val": [...], "test": [...]} that overrides the seeded split."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise KdsamError(f"{path}: not a readable split file ({err})") from err
    if not isinstance(data, dict) or not set(data) & set(SPLITS):
        raise KdsamError(f'{path}: a split file maps "train"/"val"/"test" to lists of sample names')
    return {k: list(data.get(k, [])) for k in SPLITS}
