"""A stand-in `SliceModel` whose answers are known: it segments the bright pixels (> 128) inside the
box, adds the bright component under an object click, and removes the one under a background click.
Its frame is the slice itself (no resizing), so the interactive rule can be tested without a network."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from segment_anything.utils.transforms import ResizeLongestSide

from kdsam.infer.volume import Decoded, FramePrompt

BRIGHT = 128


class FakeSlices:
    def __init__(self, side: int) -> None:
        self.img_size = side
        self.transform = ResizeLongestSide(side)
        self.batch_size = 1
        self.workers = 1
        self.embedded: list[int] = []  # ids of the slices embedded, to count encoder calls

    def embed(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.embedded.extend(id(i) for i in images)
        return [np.asarray(i, np.float32) for i in images]

    def _mask(self, image: np.ndarray, box: np.ndarray | None, points: np.ndarray, labels: np.ndarray) -> np.ndarray:
        bright = image > BRIGHT
        mask = np.zeros_like(bright)
        if box is not None:
            x0, y0, x1, y1 = (round(float(v)) for v in box)
            mask[y0:y1, x0:x1] = bright[y0:y1, x0:x1]
        parts, _ = ndimage.label(bright)
        for (x, y), label in zip(points.astype(int), labels, strict=True):
            part = parts[y, x]
            if part:
                mask[parts == part] = bool(label)
        return mask

    def decode_box(self, embedding, frame_box, input_size, original_size) -> np.ndarray:
        return self._mask(embedding, np.asarray(frame_box), np.zeros((0, 2)), np.zeros(0))

    def decode_prompts(self, embedding, prompt: FramePrompt, input_size, original_size) -> Decoded:
        mask = self._mask(embedding, prompt.box, np.asarray(prompt.points), np.asarray(prompt.labels))
        return Decoded(mask, np.where(mask, 10.0, -10.0).astype(np.float32), 1.0)

    def slices(self) -> FakeSlices:  # `slice_model` takes anything with a slices() view
        return self
