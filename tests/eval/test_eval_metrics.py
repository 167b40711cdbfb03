"""Metrics against independent computations: analytic geometry, brute-force distances, exact perimeters."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, ndimage
from scipy.spatial.distance import cdist
from skimage.draw import disk, ellipse

from kdsam.eval import metrics


def square(shape: tuple[int, int], y: int, x: int, side: int) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[y : y + side, x : x + side] = True
    return m


def blob(seed: int, shape: tuple[int, int] = (48, 56)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.standard_normal(shape), 4) > 0.02


def edges(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels as MONAI defines them: the mask minus its erosion (the image border is outside)."""
    return mask & ~ndimage.binary_erosion(mask, border_value=0)


def directed_distances(a: np.ndarray, b: np.ndarray, spacing: float) -> np.ndarray:
    return cdist(np.argwhere(edges(a)) * spacing, np.argwhere(edges(b)) * spacing).min(axis=1)


def test_dice_iou_of_offset_squares_are_analytic():
    a, b = square((100, 100), 20, 20, 40), square((100, 100), 20, 30, 40)  # overlap 30x40
    assert metrics.dice(a, b) == pytest.approx(2 * 1200 / 3200)
    assert metrics.iou(a, b) == pytest.approx(1200 / 2000)


def test_dice_of_offset_discs_matches_lens_area():
    r, d = 60.0, 40.0
    a, b = np.zeros((300, 300), bool), np.zeros((300, 300), bool)
    a[disk((150, 120), r)] = True
    b[disk((150, 120 + d), r)] = True
    lens = 2 * r**2 * math.acos(d / (2 * r)) - d / 2 * math.sqrt(4 * r**2 - d**2)
    assert metrics.dice(a, b) == pytest.approx(2 * lens / (2 * math.pi * r**2), rel=0.01)
    assert metrics.iou(a, b) == pytest.approx(lens / (2 * math.pi * r**2 - lens), rel=0.01)


@pytest.mark.parametrize("spacing", [None, 0.3])
@pytest.mark.parametrize("seed", [0, 1])
def test_hd95_matches_brute_force(seed, spacing):
    pred, truth = blob(seed), blob(seed + 10)
    s = spacing or 1.0
    expected = max(
        np.percentile(directed_distances(pred, truth, s), 95), np.percentile(directed_distances(truth, pred, s), 95)
    )
    assert metrics.hd95(pred, truth, spacing=spacing) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("tolerance", [1.0, 2.0, 3.5])
def test_nsd_matches_brute_force(tolerance):
    pred, truth = blob(3), blob(4)
    d_pt, d_tp = directed_distances(pred, truth, 1.0), directed_distances(truth, pred, 1.0)
    expected = ((d_pt <= tolerance).sum() + (d_tp <= tolerance).sum()) / (len(d_pt) + len(d_tp))
    assert metrics.nsd(pred, truth, tolerance) == pytest.approx(expected, abs=1e-6)


def test_identical_masks_score_perfectly():
    m = blob(5)
    assert metrics.score(m, m, pixel_size_mm=0.2) == pytest.approx(
        {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0, "hd95_mm": 0.0, "nsd_mm": 1.0}
    )


def test_mm_variants_scale_with_pixel_size():
    a, b = square((80, 80), 10, 10, 30), square((80, 80), 10, 16, 30)
    s = metrics.score(a, b, pixel_size_mm=0.5, tolerance_px=2.0, tolerance_mm=3.0)
    assert s["hd95_mm"] == pytest.approx(s["hd95"] * 0.5, rel=1e-5)
    assert s["nsd_mm"] == pytest.approx(metrics.nsd(a, b, tolerance=6.0), abs=1e-6)  # 3 mm = 6 px


def test_empty_mask_conventions():
    empty, m = np.zeros((20, 20), bool), square((20, 20), 5, 5, 6)
    assert metrics.score(empty, empty) == {"dice": 1.0, "iou": 1.0, "hd95": 0.0, "nsd": 1.0}
    for pred, truth in [(empty, m), (m, empty)]:
        s = metrics.score(pred, truth)
        assert (s["dice"], s["iou"], s["nsd"]) == (0.0, 0.0, 0.0)
        assert math.isnan(s["hd95"])


def test_both_empty_is_one_switch_for_dice_and_nsd():
    """The CVPR24 protocol's NaN for two empty masks is the same functions with one argument."""
    empty, m = np.zeros((20, 20), bool), square((20, 20), 5, 5, 6)
    assert math.isnan(metrics.dice(empty, empty, both_empty=math.nan))
    assert math.isnan(metrics.nsd(empty, empty, both_empty=math.nan))
    assert metrics.dice(m, empty, both_empty=math.nan) == 0.0 and metrics.nsd(empty, m, both_empty=math.nan) == 0.0
    assert metrics.dice(m, m, both_empty=math.nan) == 1.0


def test_nanmean_skips_and_counts_undefined():
    assert metrics.nanmean([1.0, math.nan, 3.0, None]) == (2.0, 2)
    assert metrics.nanmean([math.nan]) == (None, 1)


def exact_perimeter(a: float, b: float) -> float:
    e2 = 1 - (b / a) ** 2
    return 4 * a * integrate.quad(lambda t: math.sqrt(1 - e2 * math.sin(t) ** 2), 0, math.pi / 2)[0]


def test_ramanujan_matches_the_elliptic_integral():
    for a, b in [(100, 100), (120, 80), (200, 90)]:
        assert metrics.ramanujan_perimeter(a, b) == pytest.approx(exact_perimeter(a, b), rel=1e-6)


def test_head_circumference_of_a_drawn_ellipse():
    mask = np.zeros((540, 800), bool)
    mask[ellipse(270, 400, 150, 220, rotation=0.4)] = True
    mask[ellipse(270, 400, 40, 40)] = False  # a hole: filled before fitting
    mask[5:9, 5:9] = True  # speckle: only the largest component counts
    assert metrics.head_circumference(mask, 0.15) == pytest.approx(exact_perimeter(220, 150) * 0.15, rel=0.005)
    assert math.isnan(metrics.head_circumference(np.zeros((5, 5), bool)))


def test_hc_error_needs_pixel_size_and_reference():
    mask = np.zeros((200, 200), bool)
    mask[ellipse(100, 100, 50, 70)] = True
    s = metrics.score(mask, mask, pixel_size_mm=0.2, hc_mm=100.0)
    assert s["hc_mm_error"] == pytest.approx(abs(exact_perimeter(70, 50) * 0.2 - 100.0), abs=0.5)
    assert "hc_mm" not in metrics.score(mask, mask)
