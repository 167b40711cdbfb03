"""Deterministic train/val/test splits, stored beside every run so evaluation never leaks."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Sequence
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


def read_split_file(path: str | Path, known: Collection[str] | None = None) -> dict[str, list[str]]:
    """A JSON file {"train": [names], "val": [...], "test": [...]} that overrides the seeded split.

    Refused in one line: another shape, a split that is not a list of names, a name in two splits
    (training on a test image), and names that are not in the dataset (`known`; a typo would
    silently shrink a split)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise KdsamError(f"{path}: not a readable split file ({err})") from err
    if not isinstance(data, dict) or not set(data) & set(SPLITS) or set(data) - set(SPLITS):
        raise KdsamError(f'{path}: a split file maps "train"/"val"/"test" (only those) to lists of sample names')
    for split, names in data.items():
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise KdsamError(f'{path}: "{split}" must be a list of sample names, not {json.dumps(names)[:60]}')
    splits = {k: list(data.get(k, [])) for k in SPLITS}
    seen: dict[str, str] = {}
    for split, names in splits.items():
        for name in names:
            if name in seen:
                where = f"both {seen[name]} and {split}" if seen[name] != split else f"{split} twice"
                raise KdsamError(f"{path}: {name!r} is in {where}; each sample belongs to one split")
            seen[name] = split
    unknown = sorted(set(seen) - set(known)) if known is not None else []
    if unknown:
        raise KdsamError(
            f"{path}: {len(unknown)} name(s) not in the dataset, e.g. {', '.join(map(repr, unknown[:3]))}; "
            "a split file lists the dataset's own sample names"
        )
    return splits
