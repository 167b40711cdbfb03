"""Objects and their box prompts, derived from ground-truth masks: one definition for training and evaluation."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

MIN_AREA = 100  # pixels: smaller specks of a mask are noise, not objects to prompt for


def box_around(mask: np.ndarray) -> np.ndarray:
    """XYXY box (pixel edges, exclusive max) around every True pixel."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def components(mask: np.ndarray, min_area: int = MIN_AREA) -> list[np.ndarray]:
    """The objects of a mask, as training and evaluation both prompt for them: each connected
    component of at least `min_area` pixels is one object (the largest is always kept, so a small
    lesion still is one). HxW bool masks in label (raster) order; [] for an empty mask."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return []
    areas = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in range(n) if areas[i] >= min_area] or [int(np.argmax(areas)) + 1]
    return [labels == k for k in keep]


def objects(target: np.ndarray, min_area: int = MIN_AREA) -> list[np.ndarray]:
    """The objects of a bool mask (`components`) or of an integer label map: each label's own
    components, in label order, so touching structures of different labels stay apart."""
    if target.dtype == bool:
        return components(target, min_area)
    return [c for k in np.unique(target) if k for c in components(target == k, min_area)]


def boxes_from_mask(mask: np.ndarray, mode: str = "components", min_area: int = MIN_AREA) -> np.ndarray:
    """Kx4 float32 XYXY boxes; empty (0x4) for an empty mask, where a box prompt is undefined.

    mode "components": one box per object (`components`). mode "all": one box around every
    object (the paper's convention).
    """
    if mode not in ("components", "all"):
        raise ValueError(f"unknown box mode {mode!r}: use 'components' or 'all'")
    objects = components(mask, min_area)
    if not objects:
        return np.zeros((0, 4), np.float32)
    if mode == "all":
        return box_around(np.logical_or.reduce(objects))[None]
    return np.stack([box_around(o) for o in objects])


def jitter_boxes(
    boxes: np.ndarray, shape: tuple[int, int], rng: np.random.Generator, fraction: float = 0.1, max_px: int = 20
) -> np.ndarray:
    """Move each box edge by up to `fraction` of the box side (at most `max_px`), clipped to the image."""
    if len(boxes) == 0:
        return boxes
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    scale = np.minimum(np.stack([w, h, w, h], 1) * fraction, max_px)
    out = boxes + rng.uniform(-1, 1, boxes.shape) * scale
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, shape[1])
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, shape[0])
    out[:, 2] = np.maximum(out[:, 2], out[:, 0] + 1)
    out[:, 3] = np.maximum(out[:, 3], out[:, 1] + 1)
    return out.astype(np.float32)


def random_boxes(shape: tuple[int, int], rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """n XYXY boxes drawn uniformly over an image (sides 15-60 % of the image's): box prompts that need
    no mask, for distilling the decoder's view of unlabelled images."""
    h, w = shape
    sides = rng.uniform(0.15, 0.6, size=(n, 2)) * np.array([w, h])
    x0 = rng.uniform(0, 1, n) * (w - sides[:, 0])
    y0 = rng.uniform(0, 1, n) * (h - sides[:, 1])
    return np.floor(np.stack([x0, y0, x0 + sides[:, 0], y0 + sides[:, 1]], axis=1)).astype(np.float32)
