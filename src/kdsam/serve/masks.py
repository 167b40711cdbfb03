"""Masks as the page and the API send them: one encoding for 2D answers and volume slices alike."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def mask_png(mask: np.ndarray) -> str:
    """HxW bool -> base64 PNG, 0/255 greyscale."""
    buffer = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")
