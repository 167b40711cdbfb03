"""Seconds of everything mode (SAM's automatic mask generator, no prompt) per image, per model.

The generator decodes a grid of point prompts (32x32 = 1024 by default) on one embedding, so its
cost is mostly the mask decoder, which every kdsam model shares: this is where a small encoder
stops helping, and the number tells a user what a prompt-free pass costs on their machine.
"""

from __future__ import annotations

import os
import statistics
from typing import Any

import numpy as np
import torch

from kdsam.bench.latency import device_name, timed_model
from kdsam.infer.everything import segment_everything
from kdsam.models.spec import ModelSpec


def blob_image(side: int = 512, seed: int = 0) -> np.ndarray:
    """A textured image with a few bright blobs: enough structure for the generator to keep masks."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:side, :side]
    image = rng.integers(30, 70, (side, side), dtype=np.int64)
    for cx, cy, r in ((0.3, 0.35, 0.12), (0.65, 0.6, 0.18), (0.7, 0.25, 0.08)):
        image[(x - cx * side) ** 2 + (y - cy * side) ** 2 < (r * side) ** 2] += 140
    return np.repeat(np.clip(image, 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def time_everything(
    spec: ModelSpec, device: str = "cpu", threads: int | None = None, points_per_side: int = 32, repeats: int = 1
) -> dict[str, Any]:
    """Median wall seconds of `segment_everything` on a 512x512 image (after one untimed run)."""
    model, weights, target = timed_model(spec, device, threads)
    image = blob_image()
    segment_everything(model, image, points_per_side)  # warm-up
    load_before = os.getloadavg()
    runs = [segment_everything(model, image, points_per_side) for _ in range(repeats)]
    return {
        "model": spec.label,
        "weights": weights,
        "device": device_name(target),
        "threads": torch.get_num_threads(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "image": "512x512 synthetic",
        "points_per_side": points_per_side,
        "seconds_per_image": round(statistics.median(r.seconds for r in runs), 3),
        "masks_found": [len(r.masks) for r in runs],
    }
