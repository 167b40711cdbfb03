"""Helpers shared by the adapters of published layouts: finding the dataset's folder, pairing files,
and saying in one line what was expected when a folder does not match."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.errors import KdsamError


def layout_error(root: Path, dataset: str, expected: str) -> KdsamError:
    """The one-line error for a folder that is not the layout the user named."""
    return KdsamError(f"{root}: not the {dataset} layout; expected {expected}")


def locate(root: Path, looks_right: Callable[[Path], bool], wrapper: str, dataset: str, expected: str) -> Path:
    """The dataset's own folder: `root` itself, or `root/wrapper` (the folder its archive unpacks
    to), so users may point at either without rearranging anything."""
    for candidate in (root, root / wrapper):
        if looks_right(candidate):
            return candidate
    raise layout_error(root, dataset, expected)


def existing(*paths: Path) -> tuple[Path, ...]:
    """The paths that exist: a record with none has no mask and is reported by name on load."""
    return tuple(p for p in paths if p.is_file())


def require_records(records: Sequence[Record], root: Path, dataset: str, expected: str) -> list[Record]:
    """An adapter that found the folders but no images fails early with what it looked for."""
    if not records:
        raise layout_error(root, dataset, expected)
    return list(records)
