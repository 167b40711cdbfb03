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


def test_label_maps_train_each_label_as_its_objects(tmp_path):
    """Two touching labels are two training objects (their union would be one), also after zooming."""
    import torch
    from PIL import Image

    from kdsam.data import open_dataset
    from kdsam.data.imageio import write_png
    from kdsam.distill.items import TrainingSet, index_dataset
    from kdsam.distill.process import TrainingProcess
    from tests.distill.tiny import make_tiny_teacher

    labels = np.zeros((60, 80), np.uint8)
    labels[10:40, 10:40], labels[10:40, 40:70] = 1, 2
    (tmp_path / "d" / "images").mkdir(parents=True)
    Image.fromarray(np.full((60, 80, 3), 90, np.uint8)).save(tmp_path / "d" / "images" / "case.png")
    write_png(tmp_path / "d" / "masks" / "case.png", labels)
    dataset = open_dataset(f"folder:{tmp_path / 'd'}")
    index = index_dataset(dataset, TrainingProcess(torch.device("cpu")))
    np.testing.assert_array_equal(index.entries[0].boxes, [[10, 10, 40, 40], [40, 10, 70, 40]])
    student = make_tiny_teacher()
    for kinds in ((), ("scale",)):
        items = TrainingSet(dataset, index, student, augmentations=kinds)
        for epoch in range(6):
            items.set_epoch(epoch)
            ys, xs = np.nonzero(items[0]["target"][0].numpy() > 0.5)
            width, height = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
            assert abs(width / height - 1) < 0.1  # one square label, never the 2:1 pair
        _, aug_labels = augment(np.zeros((60, 80, 3), np.uint8), labels, kinds, np.random.default_rng(3))
        assert aug_labels.dtype == np.uint8 and set(np.unique(aug_labels)) <= {0, 1, 2}
