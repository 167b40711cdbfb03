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
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
