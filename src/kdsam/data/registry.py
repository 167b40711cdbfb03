"""Dataset locations (`KIND:PATH`: a layout kind and the folder holding it) -> datasets. Adding a
layout is one entry in ADAPTERS.

2D layouts list image/mask records. Volume layouts (`nnunet`, `msd`, `npz`, `images`) list cases,
which the slice store turns into one record per slice (kdsam.data.volumes); their splits name cases.
"""

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
from kdsam.data.volumes.layouts import CaseList, image_cases, msd_cases, nnunet_cases, npz_cases
from kdsam.data.volumes.slices import SliceReader, VolumeOptions, VolumeSet, store_cases
from kdsam.errors import KdsamError


@dataclass(frozen=True)
class Adapter:
    """One on-disk layout. `records` lists a 2D layout; `cases` (instead) lists a volume layout's
    cases given a channel; `official_splits` means records carry meta["split"]; `labelled` False
    means no masks at all (stage 1 only)."""

    records: Callable[[Path], list[Record]] | None = None
    read_target: Callable[[Record], np.ndarray] = union_of_masks
    official_splits: bool = False
    description: str = ""
    cases: Callable[[Path, int], CaseList] | None = None
    labelled: bool = True


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
    "nnunet": Adapter(cases=nnunet_cases, description="nnU-Net v2 raw: dataset.json, imagesTr/, labelsTr/"),
    "msd": Adapter(
        cases=msd_cases, description="Medical Segmentation Decathlon task: dataset.json, imagesTr/, labelsTr/"
    ),
    "npz": Adapter(cases=npz_cases, description="MedSAM / CVPR24 / CVPR25 training npz files (imgs, gts, spacing)"),
    "images": Adapter(
        cases=image_cases,
        labelled=False,
        description="any tree of 2D images, DICOM series and NIfTI/MHA/NRRD volumes, no masks",
    ),
}
VOLUME_KINDS = tuple(k for k, a in ADAPTERS.items() if a.cases is not None)
_VOLUME_SETS: dict[tuple[str, Path, VolumeOptions], VolumeSet] = {}


def parse_location(location: str) -> tuple[str, Path]:
    kind, sep, path = location.partition(":")
    if not sep or not path:
        raise KdsamError(f"dataset {location!r}: write KIND:PATH with KIND one of {', '.join(ADAPTERS)}")
    if kind not in ADAPTERS:
        raise KdsamError(f"dataset {location!r}: unknown kind {kind!r}; choose one of {', '.join(ADAPTERS)}")
    root = Path(path).expanduser()
    if kind != "synthetic" and not root.is_dir():
        raise KdsamError(f"{root}: dataset folder not found ({kind}: {ADAPTERS[kind].description})")
    return kind, root


def is_volume_location(location: str) -> bool:
    return location.partition(":")[0] in VOLUME_KINDS


def require_labelled(location: str, purpose: str) -> None:
    """Masks are needed past stage 1: refuse an unlabelled location in one line, saying why."""
    kind, _ = parse_location(location)
    if not ADAPTERS[kind].labelled:
        raise KdsamError(
            f"{location}: {kind}: datasets have no masks; {purpose} needs masks (use it for kdsam distill, "
            "then fine-tune and evaluate on a labelled location such as nnunet:, msd:, npz: or folder:)"
        )


def volume_set(location: str, options: VolumeOptions | None = None, progress: bool = True) -> VolumeSet:
    """The stored cases of a volume location, converting what the slice store lacks (once per process)."""
    kind, root = parse_location(location)
    adapter = ADAPTERS[kind]
    if adapter.cases is None:
        raise KdsamError(f"dataset {location!r}: not a volume layout ({', '.join(VOLUME_KINDS)} are)")
    options = options or VolumeOptions()
    memo = (kind, root.resolve(), options)
    if memo not in _VOLUME_SETS:
        listing = adapter.cases(root, options.channel)
        require_unique_names([Record(c.name, c.image) for c in listing.cases])
        _VOLUME_SETS[memo] = store_cases(listing, options, progress)
    return _VOLUME_SETS[memo]


def _records(kind: str, root: Path, options: VolumeOptions | None = None) -> list[Record]:
    adapter = ADAPTERS[kind]
    if adapter.cases is not None:
        return volume_set(f"{kind}:{root}", options).records()
    assert adapter.records is not None
    return require_unique_names(adapter.records(root))


def dataset_splits(
    location: str, seed: int = 0, split_file: str | Path | None = None, volume: VolumeOptions | None = None
) -> dict[str, list[str]]:
    """train/val/test sample names: the official folders where a dataset has them, a split file
    when given, else a seeded split of the labelled images. Volume datasets split by case (patient),
    never by slice: the names are case names."""
    kind, root = parse_location(location)
    adapter = ADAPTERS[kind]
    if adapter.cases is not None:
        cases = volume_set(location, volume).cases
        names = [c.name for c in cases if c.labelled or not adapter.labelled]
    else:
        records = _records(kind, root)
        names = [r.name for r in records if r.masks]
    if split_file is not None:
        known = [c.name for c in cases] if adapter.cases is not None else [r.name for r in records]
        return read_split_file(split_file, known)
    if adapter.official_splits:
        return {s: sorted(r.name for r in records if r.meta.get("split") == s) for s in SPLITS}
    return make_split(names, seed)


def open_dataset(
    location: str,
    split: str | None = None,
    *,
    seed: int = 0,
    split_file: str | Path | None = None,
    max_side: int | None = None,
    volume: VolumeOptions | None = None,
) -> Dataset:
    """The samples of `location`, all labelled ones (split=None) or one of train/val/test; for a volume
    location, the slices of the split's cases."""
    kind, root = parse_location(location)
    adapter = ADAPTERS[kind]
    records = _records(kind, root, volume)
    if split is None:
        chosen = records
    else:
        if split not in SPLITS:
            raise KdsamError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        names = set(dataset_splits(location, seed, split_file, volume)[split])
        chosen = [r for r in records if r.meta.get("case", r.name) in names]
    load = SliceReader() if adapter.cases is not None else None
    return Dataset(location, chosen, adapter.read_target, split, max_side, load)
