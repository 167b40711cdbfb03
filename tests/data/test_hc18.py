"""HC18: the target is the FILLED ellipse, never the annotated outline; pixel size and HC from the CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from kdsam.data import dataset_splits, open_dataset
from kdsam.data.hc18 import fill_outline, hc18_records
from kdsam.data.imageio import read_mask
from kdsam.errors import KdsamError

from .conftest import HC18_HEADS, HC18_OPEN, ellipse_rho


def _by_name(root: Path) -> dict:
    return {s.name: s for s in open_dataset(f"hc18:{root}").samples()}


def _assert_is_head(mask: np.ndarray, name: str) -> None:
    """The true ellipse's inside, up to the outline's own thickness (about one pixel each side)."""
    _, _, a, b, _ = HC18_HEADS[name]
    rho, _ = ellipse_rho(HC18_HEADS[name])
    assert np.pi * a * b * 0.97 < mask.sum() < np.pi * (a + 1.5) * (b + 1.5)
    assert mask[rho < 0.95].all()
    assert not mask[rho > 1.1].any()


@pytest.mark.parametrize("name", sorted(HC18_HEADS))
def test_mask_is_the_filled_ellipse(hc18_root: Path, name: str) -> None:
    sample = _by_name(hc18_root)[name]
    outline = read_mask(hc18_root / "training_set" / f"{name}_Annotation.png")
    assert sample.mask.sum() > 3 * outline.sum()  # not the outline
    _assert_is_head(sample.mask, name)


def test_open_outline_falls_back_to_ellipse_fit(hc18_root: Path) -> None:
    outline = read_mask(hc18_root / "training_set" / f"{HC18_OPEN}_Annotation.png")
    assert ndimage.binary_fill_holes(outline).sum() == outline.sum(), "the fixture outline must be open"
    _assert_is_head(fill_outline(outline), HC18_OPEN)


def test_unfittable_outline_reported_not_fatal(hc18_root: Path) -> None:
    scribble = np.zeros((64, 80), np.uint8)
    scribble[10, 10:14] = 255
    Image.fromarray(scribble).save(hc18_root / "training_set" / "000_HC_Annotation.png")
    ds = open_dataset(f"hc18:{hc18_root}")
    assert len(list(ds.samples())) == len(HC18_HEADS) - 1
    assert [p["name"] for p in ds.problems] == ["000_HC"]
    assert "no ellipse fits" in ds.problems[0]["error"]


def test_names_meta_and_no_test_set(hc18_root: Path) -> None:
    records = {r.name: r for r in hc18_records(hc18_root)}
    assert set(records) == set(HC18_HEADS)  # test_set/ has no masks: not labelled data
    assert records["001_2HC"].meta == {"pixel_size_mm": 0.12, "hc_mm": 152.5}
    sample = _by_name(hc18_root)["000_HC"]
    assert sample.image.shape == (64, 80, 3) and sample.meta["hc_mm"] == 150.5


def test_split_covers_training_set_once(hc18_root: Path) -> None:
    splits = dataset_splits(f"hc18:{hc18_root}", seed=1)
    names = [n for part in splits.values() for n in part]
    assert sorted(names) == sorted(HC18_HEADS)


def test_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KdsamError, match="not the HC18 layout; expected training_set/"):
        hc18_records(tmp_path)
