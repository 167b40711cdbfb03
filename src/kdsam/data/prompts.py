"""Box prompts derived from ground-truth masks."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def box_around(mask: np.ndarray) -> np.ndarray:
    """XYXY box (pixel edges, exclusive max) around every True pixel."""
    ys, xs = np.nonzero(mask)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=np.float32)


def object_masks(mask: np.ndarray, min_area: int = 100) -> list[np.ndarray]:
    """The objects of a ground-truth mask: its connected components of at least `min_area` pixels.

    The largest component is always kept, so a small lesion is still an object. This is the one
    definition of "an object" that training and evaluation prompts (boxes, clicks) share.
    """
    if not mask.any():
        return []
    labels, n = ndimage.label(mask)
    areas = np.bincount(labels.ravel())[1:]
    keep = [i + 1 for i in range(n) if areas[i] >= min_area] or [int(np.argmax(areas)) + 1]
    return [labels == k for k in keep]


def boxes_from_mask(mask: np.ndarray, mode: str = "components", min_area: int = 100) -> np.ndarray:
    """Kx4 float32 XYXY boxes; empty (0x4) for an empty mask, where a box prompt is undefined.

    mode "components": one box per object (`object_masks`). mode "all": one box around every
    object together (the paper's convention).
    """
    if mode not in ("components", "all"):
        raise ValueError(f"unknown box mode {mode!r}: use 'components' or 'all'")
    objects = object_masks(mask, min_area)
    if not objects:
        return np.zeros((0, 4), np.float32)
    if mode == "all":
        return box_around(np.logical_or.reduce(objects))[None]
    return np.stack([box_around(obj) for obj in objects])


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
