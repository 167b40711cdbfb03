"""Kvasir-SEG: JPEG masks binarised at 128, a seeded split; the archive's box file is not needed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.data import dataset_splits, open_dataset
from kdsam.data.kvasir import kvasir_records
from kdsam.errors import KdsamError

from .conftest import pair


def test_records(kvasir_root: Path) -> None:
    records = {r.name: r for r in kvasir_records(kvasir_root)}
    assert len(records) == 9
    assert records["cjunomask"].masks == ()
    assert records["cju0polyp"].meta == {} and records["cju0polyp"].masks[0].name == "cju0polyp.jpg"


def test_jpeg_mask_binarised_not_tested_against_255(kvasir_root: Path) -> None:
    raw = np.asarray(Image.open(kvasir_root / "masks" / "cju0polyp.jpg").convert("L"))
    assert ((raw > 0) & (raw < 255)).any(), "the fixture must carry JPEG grey edges"
    sample = open_dataset(f"kvasir:{kvasir_root}").subset(["cju0polyp"])[0]
    truth = pair("polyp", 0)[1]
    assert sample.mask.dtype == bool and sample.image.shape == (64, 80, 3)
    iou = (sample.mask & truth).sum() / (sample.mask | truth).sum()
    assert iou > 0.95
    assert sample.mask.sum() > (raw == 255).sum()  # grey edge pixels >= 128 count as foreground


def test_bad_files_reported_by_name_rest_loaded(kvasir_root: Path) -> None:
    ds = open_dataset(f"kvasir:{kvasir_root}")
    names = [s.name for s in ds.samples()]
    assert sorted(names) == [f"cju{i}polyp" for i in range(6)]
    problems = {p["name"]: p for p in ds.problems}
    assert set(problems) == {"cjutruncated", "cjunomask", "cjuwrongsize"}
    assert problems["cjutruncated"]["file"].endswith("cjutruncated.jpg")
    assert "no mask" in problems["cjunomask"]["error"]
    assert "40x32" in problems["cjuwrongsize"]["error"]


def test_seeded_split_is_deterministic_and_disjoint(kvasir_root: Path) -> None:
    location = f"kvasir:{kvasir_root}"
    first, again = dataset_splits(location, seed=3), dataset_splits(location, seed=3)
    assert first == again
    parts = [set(v) for v in first.values()]
    assert sum(map(len, parts)) == len(set().union(*parts)) == 8  # every labelled image, once
    assert "cjunomask" not in set().union(*parts)
    assert all(parts)
    assert any(dataset_splits(location, seed=s) != first for s in range(4, 12))


def test_parent_folder_accepted(kvasir_root: Path) -> None:
    assert len(kvasir_records(kvasir_root.parent)) == 9


def test_wrong_layout_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(KdsamError, match="expected Kvasir-SEG/ with images/") as err:
        kvasir_records(tmp_path)
    assert "\n" not in str(err.value)


def test_box_file_is_not_needed(kvasir_root: Path) -> None:
    """Boxes come from the masks: the archive's kavsir_bboxes.json, present or garbled, changes nothing."""
    before = [(r.name, r.image, r.masks) for r in kvasir_records(kvasir_root)]
    (kvasir_root / "kavsir_bboxes.json").write_text("{not json")
    assert [(r.name, r.image, r.masks) for r in kvasir_records(kvasir_root)] == before
