"""ISIC 2017: official splits from the folders; superpixels and the metadata CSV are not samples."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from kdsam.data import dataset_splits, open_dataset
from kdsam.data.isic2017 import isic2017_records
from kdsam.errors import KdsamError

from .conftest import pair


def test_official_splits_from_folders(isic_root: Path) -> None:
    splits = dataset_splits(f"isic2017:{isic_root}", seed=0)
    assert splits == {
        "train": ["ISIC_0000000", "ISIC_0000001", "ISIC_0000002", "ISIC_0000003"],
        "val": ["ISIC_0000004", "ISIC_0000005"],
        "test": ["ISIC_0000006", "ISIC_0000007"],
    }
    assert dataset_splits(f"isic2017:{isic_root}", seed=9) == splits  # the seed plays no part


def test_superpixels_are_not_samples(isic_root: Path) -> None:
    names = [r.name for r in isic2017_records(isic_root)]
    assert len(names) == 8
    assert not any("superpixels" in n or "metadata" in n for n in names)


def test_split_masks_and_missing_mask(isic_root: Path) -> None:
    val = open_dataset(f"isic2017:{isic_root}", "val")
    sample = val[0]
    assert sample.name == "ISIC_0000004"
    assert np.array_equal(sample.mask, pair("skin", 104)[1])
    train = open_dataset(f"isic2017:{isic_root}", "train")
    assert len(list(train.samples())) == 3
    assert [p["name"] for p in train.problems] == ["ISIC_0000003"]


def test_missing_split_folder_tolerated(isic_root: Path) -> None:
    shutil.rmtree(isic_root / "ISIC-2017_Validation_Data")
    shutil.rmtree(isic_root / "ISIC-2017_Test_v2_Data")
    splits = dataset_splits(f"isic2017:{isic_root}")
    assert len(splits["train"]) == 4 and splits["val"] == [] and splits["test"] == []


def test_no_split_folder_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KdsamError, match=r"not the ISIC 2017 layout; expected .*ISIC-2017_Training_Data/") as err:
        isic2017_records(tmp_path)
    assert "\n" not in str(err.value)
