"""Objects and their boxes: one definition, shared by training items and evaluation prompts."""

from __future__ import annotations

import numpy as np
import pytest

from kdsam.data import prompts
from kdsam.data.prompts import boxes_from_mask, components
from kdsam.distill import items


@pytest.fixture()
def mask() -> np.ndarray:
    m = np.zeros((60, 80), bool)
    m[5:20, 10:30] = True  # 300 px
    m[40:55, 50:75] = True  # 375 px
    m[0:3, 70:73] = True  # a 9 px speck: not an object
    return m


def test_objects_are_large_components_with_their_boxes(mask: np.ndarray) -> None:
    objects = components(mask, min_area=100)
    assert [int(o.sum()) for o in objects] == [300, 375]
    np.testing.assert_array_equal(boxes_from_mask(mask), [[10, 5, 30, 20], [50, 40, 75, 55]])
    np.testing.assert_array_equal(boxes_from_mask(mask, "all"), [[10, 5, 75, 55]])  # the speck left out
    assert [int(o.sum()) for o in components(mask, min_area=400)] == [375]  # the largest is always kept
    assert components(np.zeros((4, 4), bool)) == [] and boxes_from_mask(np.zeros((4, 4), bool)).shape == (0, 4)
    with pytest.raises(ValueError, match="unknown box mode"):
        boxes_from_mask(mask, "every")


def test_training_prompts_for_the_same_objects_as_evaluation(mask: np.ndarray) -> None:
    assert items.objects is prompts.objects  # one definition, not a copy
    train_boxes = np.stack([prompts.box_around(o) for o in items.objects(mask)])
    np.testing.assert_array_equal(train_boxes, boxes_from_mask(mask))


def test_touching_labels_are_separate_objects() -> None:
    labels = np.zeros((40, 60), np.uint8)
    labels[5:25, 5:30], labels[5:25, 30:55] = 2, 1  # one blob if united
    assert len(components(labels > 0)) == 1
    objects = prompts.objects(labels)
    assert [int(o.sum()) for o in objects] == [500, 500]
    assert objects[0][5, 40] and objects[1][5, 10]  # label order: 1, then 2
    assert len(prompts.objects(labels > 0)) == 1  # a bool mask: its components
