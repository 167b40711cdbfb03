"""BUSI: union of every _mask file, RGB/RGBA masks reduced, names with spaces, normal images kept."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdsam.data import dataset_splits, open_dataset
from kdsam.data.busi import busi_records
from kdsam.errors import KdsamError

from .conftest import pair


def _samples(root: Path) -> dict:
    return {s.name: s for s in open_dataset(f"busi:{root}").samples()}


def test_records_classes_and_names(busi_root: Path) -> None:
    records = {r.name: r for r in busi_records(busi_root)}
    assert set(records) == {
        "benign (1)", "benign (2)", "benign (3)", "malignant (1)", "malignant (2)", "normal (1)", "normal (2)"
    }  # fmt: skip
    assert records["malignant (2)"].meta == {"class": "malignant"}
    assert [p.name for p in records["benign (2)"].masks] == ["benign (2)_mask.png", "benign (2)_mask_1.png"]


def test_target_is_union_of_masks(busi_root: Path) -> None:
    sample = _samples(busi_root)["benign (2)"]
    first = pair("breast_lesion", 400 + 10 * len("benign") + 2)[1]
    second = np.zeros_like(first)
    second[2:10, 3:15] = True
    assert np.array_equal(sample.mask, first | second)
    assert sample.mask.sum() > first.sum()


def test_rgba_mask_reduced_to_one_channel(busi_root: Path) -> None:
    sample = _samples(busi_root)["malignant (1)"]
    assert sample.mask.shape == (64, 80)
    assert np.array_equal(sample.mask, pair("breast_lesion", 400 + 10 * len("malignant") + 1)[1])


def test_normal_images_kept_with_empty_masks(busi_root: Path) -> None:
    samples = _samples(busi_root)
    normal = [s for s in samples.values() if s.meta["class"] == "normal"]
    assert len(normal) == 2 and not any(s.mask.any() for s in normal)
    assert len(samples) == 7


def test_split_is_deterministic_and_disjoint(busi_root: Path) -> None:
    location = f"busi:{busi_root}"
    splits = dataset_splits(location, seed=5)
    assert splits == dataset_splits(location, seed=5)
    everything = [n for part in splits.values() for n in part]
    assert len(everything) == len(set(everything)) == 7


def test_dataset_folder_itself_accepted(busi_root: Path) -> None:
    assert len(busi_records(busi_root / "Dataset_BUSI_with_GT")) == 7


def test_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KdsamError, match="not the BUSI layout; expected Dataset_BUSI_with_GT/"):
        busi_records(tmp_path)
