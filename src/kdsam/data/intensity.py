"""From scanner units to the 8-bit pixels SAM-family models read: CT windows, percentiles, min-max.

The choice (`--window`) is one of:
- a preset name or `L,W` (level and width, in the file's units: HU for CT): values outside
  [L - W/2, L + W/2] are clipped and the window is mapped linearly onto 0..255;
- `auto` (default): the DICOM file's own window when it has one; else MedSAM's preprocessing
  (pre_CT_MR.py): a CT gets the soft-tissue window, any other modality the 0.5-99.5 percentiles
  of its non-zero voxels, with zero voxels kept at 0;
- `percentile`: that percentile normalisation whatever the modality; `minmax`: the whole range.
Data already 8-bit passes unchanged under `auto`. The model's own preprocessing runs afterwards.
What was applied is returned as a dict, for the output's metadata.

Non-finite voxels (NaN, +-inf: a failed reconstruction, a masked export) take no part in the
statistics; NaN and -inf map to 0, +inf to 255, and the record counts them (`non_finite_voxels`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kdsam.errors import KdsamError

# Level, width in HU, as radiopaedia.org/articles/windowing-ct lists them.
PRESETS: dict[str, tuple[float, float]] = {
    "soft-tissue": (40.0, 400.0),
    "lung": (-600.0, 1500.0),
    "bone": (400.0, 1800.0),
    "brain": (40.0, 80.0),
}
MODES = ("auto", "percentile", "minmax")
PERCENTILES = (0.5, 99.5)


def parse_window(text: str) -> str | tuple[float, float]:
    """'auto' | 'percentile' | 'minmax' | a preset name | 'L,W' -> the mode name or (level, width)."""
    key = text.strip().lower().replace("_", "-")
    if key in MODES:
        return key
    if key in PRESETS:
        return PRESETS[key]
    try:
        level, width = (float(v) for v in key.split(","))
    except ValueError:
        level, width = 0.0, -1.0
    if not (math.isfinite(level) and math.isfinite(width) and width > 0):  # "0,inf" and "nan,400" too
        choices = ", ".join([*MODES, *PRESETS])
        raise KdsamError(f"--window {text!r}: expected finite LEVEL,WIDTH with WIDTH > 0, or one of {choices}")
    return level, width


def window_to_uint8(data: np.ndarray, level: float, width: float) -> np.ndarray:
    """Clip to the window and map it linearly onto 0..255."""
    low = level - width / 2
    scaled = (np.asarray(data, dtype=np.float32) - low) * (255.0 / width)
    return np.nan_to_num(np.clip(scaled + 0.5, 0, 255), nan=0.0).astype(np.uint8)


def range_to_uint8(data: np.ndarray, low: float, high: float) -> np.ndarray:
    if high <= low:
        return np.zeros(np.shape(data), np.uint8)
    return window_to_uint8(data, (low + high) / 2, high - low)


def percentile_range(data: np.ndarray) -> tuple[float, float]:
    """MedSAM's bounds: the 0.5 and 99.5 percentiles of the non-zero voxels (the air/background
    outside an MR is exactly 0 and would otherwise dominate); non-finite voxels are left out."""
    foreground = data[(data != 0) & np.isfinite(data)]
    if foreground.size == 0:
        return 0.0, 0.0
    low, high = np.percentile(foreground, PERCENTILES)
    return float(low), float(high)


def to_uint8(
    data: np.ndarray,
    choice: str | tuple[float, float] = "auto",
    modality: str | None = None,
    file_window: tuple[float, float] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """(uint8 array of data's shape, record of what was applied). Computed over the whole array, so
    every slice of a volume gets the same mapping. Data with no finite value at all is refused: its
    picture would be blank."""
    data = np.asarray(data)
    finite = np.isfinite(data) if data.dtype.kind == "f" else None
    bad = 0 if finite is None else int(data.size - np.count_nonzero(finite))
    if bad and bad == data.size:
        raise KdsamError(f"no finite value in the data ({bad} NaN or infinite voxels): nothing to segment")
    out, record = _mapped(data, choice, modality, file_window, finite)
    return out, {**record, "non_finite_voxels": bad}


def _mapped(
    data: np.ndarray,
    choice: str | tuple[float, float],
    modality: str | None,
    file_window: tuple[float, float] | None,
    finite: np.ndarray | None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """to_uint8's mapping; `finite`: where a float array is finite (None for integer data)."""
    if isinstance(choice, tuple):
        level, width = choice
        name = next((n for n, v in PRESETS.items() if v == choice), None)
        return window_to_uint8(data, level, width), {"method": "window", "level": level, "width": width, "preset": name}
    if choice == "auto":
        if file_window is not None:
            level, width = file_window
            return window_to_uint8(data, level, width), {
                "method": "window",
                "level": level,
                "width": width,
                "source": "the file's WindowCenter/WindowWidth",
            }
        if data.dtype == np.uint8:
            return data, {"method": "none", "source": "8-bit data used as stored"}
        if (modality or "").upper() == "CT":
            level, width = PRESETS["soft-tissue"]
            return window_to_uint8(data, level, width), {
                "method": "window",
                "level": level,
                "width": width,
                "preset": "soft-tissue",
                "source": "CT default",
            }
        choice = "percentile"
    if choice == "percentile":
        low, high = percentile_range(data)
        out = range_to_uint8(data, low, high)
        out[data == 0] = 0
        return out, {"method": "percentile", "percentiles": list(PERCENTILES), "low": low, "high": high}
    values = data if finite is None else data[finite]
    low, high = (float(np.min(values)), float(np.max(values))) if values.size else (0.0, 0.0)
    return range_to_uint8(data, low, high), {"method": "minmax", "low": low, "high": high}
