"""Everything mode: the official generator, reading images in the model's own frame, into a label map."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything import SamAutomaticMaskGenerator

from kdsam.infer.everything import label_overlay, mask_generator, segment_everything
from kdsam.models.teachers import load_teacher
from kdsam.predictor import KDSamPredictor


@pytest.fixture(scope="module")
def litemedsam():
    return load_teacher("litemedsam")


def test_generator_uses_the_models_own_transform(litemedsam):
    generator = mask_generator(litemedsam, points_per_side=4)
    assert isinstance(generator.predictor, KDSamPredictor)
    assert type(generator.predictor.transform) is type(litemedsam.transform())


def test_label_map_paints_smaller_objects_over_larger(litemedsam, monkeypatch):
    big, small = np.zeros((20, 30), bool), np.zeros((20, 30), bool)
    big[2:18, 2:28] = True
    small[8:12, 10:14] = True
    records = [{"segmentation": small, "area": 16}, {"segmentation": big, "area": 416}]
    monkeypatch.setattr(SamAutomaticMaskGenerator, "generate", lambda self, image: records)
    result = segment_everything(litemedsam, np.zeros((20, 30, 3), np.uint8))
    assert [r["area"] for r in result.masks] == [416, 16]
    assert result.label_map[10, 12] == 2 and result.label_map[3, 3] == 1 and result.label_map[0, 0] == 0


def test_runs_end_to_end_on_a_real_model(litemedsam):
    image = np.zeros((96, 128, 3), np.uint8)
    image[30:70, 40:90] = 200
    # LiteMedSAM was trained on boxes only: its answers to single points fail SAM's quality filters,
    # so they are switched off here to exercise the path (see docs: everything mode wants point training).
    result = segment_everything(litemedsam, image, points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert result.label_map.shape == (96, 128) and len(result.masks) >= 1
    assert 1 <= result.label_map.max() <= len(result.masks) and all(r["area"] > 0 for r in result.masks)
    assert label_overlay(image, result.label_map).shape == image.shape and result.seconds > 0
