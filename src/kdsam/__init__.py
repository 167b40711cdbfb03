"""kdsam: distil Segment Anything into a small, fast CNN student for medical image segmentation.

The public API is imported on first use, so `kdsam --help` does not pay for torch and timm.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "KDSam": "kdsam.models.sam",
    "KDSamPredictor": "kdsam.predictor",
    "build_student": "kdsam.models.student",
    "load_model": "kdsam.models.loading",
    "load_predictor": "kdsam.models.loading",
    "load_teacher": "kdsam.models.teachers",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'kdsam' has no attribute {name!r}")
