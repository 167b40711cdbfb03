"""Simulated clicks: the standard interactive-segmentation protocol, shared by training and evaluation.

The first click is a positive one at the object's interior point farthest from its boundary. Each
next click goes to the point farthest from the boundary of the largest error region of the current
prediction: positive where the object was missed, negative where background was taken. This is the
protocol of the click-based benchmarks (GrabCut/Berkeley NoC, RITM, SAM's simulated interaction),
so NoC@85/NoC@90 from `kdsam evaluate --prompt clicks:N` are comparable with theirs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class Click:
    """One click in original pixels: (x, y), positive (inside the object) or negative."""

    x: int
    y: int
    positive: bool


def _deepest_point(region: np.ndarray) -> tuple[int, int]:
    """(x, y) of the pixel of `region` farthest from its boundary (the image border counts as one).

    Padding by one background pixel makes the border a boundary; ties go to the first pixel in
    row-major order, so the choice is deterministic.
    """
    distance = ndimage.distance_transform_edt(np.pad(region, 1))[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return int(x), int(y)


def first_click(truth: np.ndarray) -> Click:
    """The positive click at the object's interior point farthest from its boundary."""
    if not truth.any():
        raise ValueError("no object to click on: the mask is empty")
    x, y = _deepest_point(truth)
    return Click(x, y, True)


def next_click(pred: np.ndarray, truth: np.ndarray) -> Click | None:
    """The corrective click for a prediction, or None when it equals the truth.

    The largest connected error region (missed object or wrongly taken background) gets the click,
    at its point farthest from the region's boundary; the click is positive for a missed region.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    best: tuple[int, np.ndarray, bool] | None = None
    for error, positive in ((truth & ~pred, True), (pred & ~truth, False)):
        labels, n = ndimage.label(error)
        if n == 0:
            continue
        areas = np.bincount(labels.ravel())[1:]
        k = int(np.argmax(areas))
        if best is None or areas[k] > best[0]:
            best = (int(areas[k]), labels == k + 1, positive)
    if best is None:
        return None
    x, y = _deepest_point(best[1])
    return Click(x, y, best[2])


def as_point_prompt(clicks: list[Click]) -> tuple[np.ndarray, np.ndarray]:
    """Clicks -> SAM's `point_coords` (Nx2 float, x then y) and `point_labels` (N, 1 positive / 0 negative)."""
    coords = np.array([[c.x, c.y] for c in clicks], dtype=np.float32).reshape(-1, 2)
    labels = np.array([int(c.positive) for c in clicks], dtype=np.int64)
    return coords, labels
