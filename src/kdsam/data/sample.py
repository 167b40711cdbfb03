"""The one record every dataset adapter yields."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Sample:
    """One labelled image.

    image: HxWx3 uint8 RGB. mask: HxW bool, the union of all annotated structures, at the image's
    own resolution. name: the file stem (`ISIC_0000000`, `benign (1)`), unique within a dataset.
    meta: anything else the adapter knows (class, pixel size in mm, source paths, ...).
    labels: HxW integer label map (0 background, 1..K) when the mask file stores several labels;
    None for a binary mask, which is one structure (label 1).
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    labels: np.ndarray | None = None

    @property
    def target(self) -> np.ndarray:
        """What objects are taken from: the label map of a multi-label mask, else the bool mask."""
        return self.mask if self.labels is None else self.labels

    @property
    def label_ids(self) -> list[int]:
        """The labels present, ascending: [1] for a binary mask, [] for an empty one."""
        if self.labels is None:
            return [1] if self.mask.any() else []
        return [int(k) for k in np.unique(self.labels) if k]

    def by_label(self) -> list[tuple[int, Sample]]:
        """[(label, this sample with only that label as its mask)], label order; [(1, self)] for a
        binary mask. Evaluation scores each label on its own, as the CVPR24 challenge does."""
        if self.labels is None:
            return [(1, self)]
        return [(k, Sample(self.name, self.image, self.labels == k, {**self.meta, "label": k})) for k in self.label_ids]
