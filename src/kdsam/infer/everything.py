"""Everything mode: SAM's automatic mask generator on any kdsam model, with that model's preprocessing.

The official `SamAutomaticMaskGenerator` prompts a grid of points, keeps masks by predicted IoU and
stability, and removes duplicates by NMS. It builds a plain `SamPredictor`, which would resize every
model the SAM way; kdsam swaps in `KDSamPredictor`, so MedSAM squashes, LiteMedSAM and students use
their own frames, and the generator's point coordinates go through the same transform.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from segment_anything import SamAutomaticMaskGenerator

from kdsam.models.sam import KDSam
from kdsam.predictor import KDSamPredictor, as_rgb_uint8


@dataclass(frozen=True)
class EverythingResult:
    """label_map: HxW uint16, 0 = background, 1..K in order of decreasing area (smaller masks are
    painted over larger ones, so a nested structure keeps its own label). masks: the generator's
    records (area, bbox XYWH, predicted_iou, stability_score, point_coords), one per label."""

    label_map: np.ndarray
    masks: list[dict[str, Any]]
    seconds: float


def mask_generator(model: KDSam, points_per_side: int = 32, **options: Any) -> SamAutomaticMaskGenerator:
    """The official generator (its defaults unless given) reading images the way `model` was trained."""
    generator = SamAutomaticMaskGenerator(model, points_per_side=points_per_side, **options)
    generator.predictor = KDSamPredictor(model)
    return generator


def segment_everything(model: KDSam, image: np.ndarray, points_per_side: int = 32, **options: Any) -> EverythingResult:
    """Every object the model finds in `image` (HxWx3 uint8; grey, RGBA and 16-bit are converted)."""
    image = as_rgb_uint8(image)
    start = time.perf_counter()
    records = [r for r in mask_generator(model, points_per_side, **options).generate(image) if r["area"] > 0]
    seconds = time.perf_counter() - start
    records.sort(key=lambda r: -r["area"])
    label_map = np.zeros(image.shape[:2], np.uint16)
    for label, record in enumerate(records, start=1):
        label_map[record.pop("segmentation")] = label
    return EverythingResult(label_map, records, seconds)


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """(n+1)x3 uint8 colours, black for background; seeded, so reruns draw the same picture."""
    colors = np.random.default_rng(seed).integers(40, 256, size=(n + 1, 3), dtype=np.uint8)
    colors[0] = 0
    return colors


def label_overlay(image: np.ndarray, label_map: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """The image with each label tinted in its own colour."""
    image = as_rgb_uint8(image).astype(np.float32)
    colors = label_colors(int(label_map.max())).astype(np.float32)[label_map]
    tinted = np.where(label_map[..., None] > 0, (1 - alpha) * image + alpha * colors, image)
    return tinted.round().astype(np.uint8)
