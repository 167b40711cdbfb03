"""A sample is its name: two files that would share one are refused, never split in two."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdsam.cli import main
from kdsam.data import dataset_splits, open_dataset
from kdsam.errors import KdsamError

from .conftest import save


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Ten labelled images; enough that a seeded split has every part."""
    image, mask = np.full((16, 16, 3), 90, np.uint8), np.zeros((16, 16), bool)
    mask[4:12, 4:12] = True
    for i in range(10):
        save(tmp_path / "images" / f"case{i}.png", image)
        save(tmp_path / "masks" / f"case{i}.png", mask)
    return tmp_path


def test_same_stem_twice_is_refused_naming_both(root: Path, capsys) -> None:
    save(root / "images" / "case9.jpg", np.full((16, 16, 3), 90, np.uint8))
    for call in (lambda: open_dataset(f"folder:{root}", "test"), lambda: dataset_splits(f"folder:{root}")):
        with pytest.raises(KdsamError) as err:
            call()
        msg = str(err.value)
        assert "case9.jpg" in msg and "case9.png" in msg and "two splits" in msg and "\n" not in msg
    assert main(["data", "inspect", f"folder:{root}"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_two_masks_for_one_image_are_refused(root: Path) -> None:
    save(root / "masks" / "case3.jpg", np.zeros((16, 16), bool))
    with pytest.raises(KdsamError, match=r"case3\.jpg and .*case3\.png are both the mask of 'case3'"):
        open_dataset(f"folder:{root}")


def test_unique_names_split_once(root: Path) -> None:
    splits = dataset_splits(f"folder:{root}")
    names = [n for part in splits.values() for n in part]
    assert sorted(names) == sorted(f"case{i}" for i in range(10))  # each sample in exactly one split
