"""The click simulation protocol: deepest interior point first, then the largest error region."""

from __future__ import annotations

import numpy as np
import pytest

from kdsam.data.clicks import Click, as_point_prompt, first_click, next_click


def _rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_first_click_is_the_deepest_interior_point():
    truth = _rect(40, 60, 10, 31, 5, 26)  # a 21x21 square centred at (15, 20)
    assert first_click(truth) == Click(15, 20, True)


def test_first_click_counts_the_image_border_as_boundary():
    truth = _rect(20, 20, 0, 20, 0, 5)  # a strip along the left edge
    click = first_click(truth)
    assert click.x == 2 and click.positive


def test_first_click_refuses_an_empty_mask():
    with pytest.raises(ValueError, match="empty"):
        first_click(np.zeros((5, 5), bool))


def test_next_click_goes_to_the_largest_error_region_with_its_sign():
    truth = _rect(50, 50, 10, 40, 10, 40)
    missed = truth.copy()
    missed[10:40, 30:40] = False  # a 30x10 strip missed
    click = next_click(missed, truth)
    assert click.positive and 30 <= click.x < 40 and 10 <= click.y < 40

    spill = truth | _rect(50, 50, 0, 6, 0, 50)  # 6 rows of background taken, larger than one stray pixel
    spill[45, 45] = True
    click = next_click(spill, truth)
    assert not click.positive and click.y < 6


def test_next_click_is_none_for_a_perfect_prediction():
    truth = _rect(10, 10, 2, 8, 2, 8)
    assert next_click(truth.copy(), truth) is None


def test_point_prompt_layout_matches_sam():
    coords, labels = as_point_prompt([Click(3, 4, True), Click(7, 1, False)])
    assert coords.tolist() == [[3, 4], [7, 1]] and coords.dtype == np.float32
    assert labels.tolist() == [1, 0]
