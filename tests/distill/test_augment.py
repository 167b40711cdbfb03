"""Stage-2 augmentations move image, mask and so the box prompt together."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from kdsam.distill.items import augment
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from tests.distill.tiny import FAST, STUDENT


def test_geometry_keeps_the_object_under_its_mask():
    mask = np.zeros((60, 80), bool)
    mask[10:30, 45:70] = True
    image = np.where(mask[..., None], 200, 40).astype(np.uint8).repeat(3, axis=2)
    moved = 0
    for seed in range(12):
        aug_image, aug_mask = augment(image, mask, ("flip", "scale"), np.random.default_rng(seed))
        assert aug_image.shape[:2] == aug_mask.shape and aug_mask.any()
        inside = aug_image[aug_mask][:, 0]
        assert np.mean(inside > 120) > 0.95  # the object's pixels, not the background's
        assert np.mean(aug_image[~aug_mask][:, 0] > 120) < 0.05
        moved += not np.array_equal(aug_mask, mask)
    assert moved >= 10


def test_intensity_changes_pixels_not_geometry():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:10, 5:10] = True
    aug_image, aug_mask = augment(image, mask, ("intensity",), np.random.default_rng(1))
    assert np.array_equal(aug_mask, mask) and not np.array_equal(aug_image, image)


def test_finetune_with_augmentations_records_them(tmp_path, tiny_teacher, splits):
    run = tmp_path / "run"
    one = replace(FAST, epochs=1)
    distill(tiny_teacher, splits["train"], splits["val"], run, cache_dir=tmp_path, cfg=one, perceptual="none",
            **STUDENT)  # fmt: skip
    finetune(run, splits["train"], splits["val"], cfg=one, augmentations=["flip", "scale", "intensity"],
             cache_dir=tmp_path)  # fmt: skip
    import json

    config = json.loads((run / "config.json").read_text())["finetune"]
    assert config["augment"] == ["flip", "intensity", "scale"] and config["completed"]
