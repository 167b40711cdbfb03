"""Segmentation metrics: small pure functions over HxW (or DxHxW) bool masks, with stated empty-mask conventions.

Conventions (the same for every function, so a mean over a test set never depends on accidents):

| case                 | dice | iou | hd95 | nsd |
| -------------------- | ---- | --- | ---- | --- |
| both masks empty     | 1    | 1   | 0    | 1   |
| exactly one is empty | 0    | 0   | NaN  | 0   |

One switch changes the both-empty row: `both_empty=math.nan` on `dice` and `nsd` (the CVPR24
challenge's convention: such a label then makes a case's mean NaN). HD95 is undefined (not
infinite) when one mask is empty: it is NaN, and `nanmean` leaves it out of
means, counting how many it left out, so a report can say so. Distances are in pixels, or in mm
when a pixel spacing is given. Surface distances come from MONAI, not from code of our own.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import torch
from monai.metrics import compute_hausdorff_distance, compute_surface_dice
from scipy import ndimage
from skimage.measure import regionprops

NSD_TOLERANCE_PX = 2.0
NSD_TOLERANCE_MM = 2.0


def label_column(label: int | str, metric: str) -> str:
    """The name of one label's score (`label2_dice`): per-image columns and per-label table columns."""
    return f"label{label}_{metric}"


def split_label_column(name: str) -> tuple[str, str] | None:
    """(label, metric) of a `label_column` name; None for any other column."""
    if not name.startswith("label"):
        return None
    label, _, metric = name[len("label") :].partition("_")
    return label, metric


def _check(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape or pred.ndim not in (2, 3):
        raise ValueError(f"expected two HxW (or DxHxW) masks of one shape, got {pred.shape} and {truth.shape}")
    return pred, truth


def dice(pred: np.ndarray, truth: np.ndarray, both_empty: float = 1.0) -> float:
    """2|P∩T| / (|P|+|T|); `both_empty` (1 unless a protocol says otherwise) when both are empty."""
    pred, truth = _check(pred, truth)
    total = int(pred.sum()) + int(truth.sum())
    return both_empty if total == 0 else 2.0 * int((pred & truth).sum()) / total


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    """|P∩T| / |P∪T|; 1 when both are empty."""
    pred, truth = _check(pred, truth)
    union = int((pred | truth).sum())
    return 1.0 if union == 0 else int((pred & truth).sum()) / union


def _empty_case(pred: np.ndarray, truth: np.ndarray, both: float, one: float) -> float | None:
    """The convention's value when a mask is empty, or None when both have a surface to measure."""
    if not pred.any() and not truth.any():
        return both
    if not pred.any() or not truth.any():
        return one
    return None


def _as_tensor(mask: np.ndarray) -> torch.Tensor:
    """HxW (DxHxW) bool -> 1x1xHxW (1x1xDxHxW), the one-hot batch layout MONAI reads (one foreground channel)."""
    return torch.from_numpy(np.ascontiguousarray(mask))[None, None]


@contextmanager
def _quiet_monai() -> Iterator[None]:
    """MONAI warns about empty masks (handled before it is called) and about its own deprecations."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


Spacing = float | Sequence[float] | None


def hd95(pred: np.ndarray, truth: np.ndarray, spacing: Spacing = None) -> float:
    """Symmetric 95th-percentile Hausdorff distance between the mask edges (MONAI), in pixels or,
    with `spacing` (mm per pixel, or per axis), in mm. 0 when both are empty, NaN when exactly one is."""
    pred, truth = _check(pred, truth)
    special = _empty_case(pred, truth, both=0.0, one=math.nan)
    if special is not None:
        return special
    with _quiet_monai():
        value = compute_hausdorff_distance(
            _as_tensor(pred), _as_tensor(truth), include_background=True, percentile=95, spacing=spacing
        )
    return float(value.item())


def nsd(
    pred: np.ndarray,
    truth: np.ndarray,
    tolerance: float = NSD_TOLERANCE_PX,
    spacing: Spacing = None,
    surfels: bool = False,
    both_empty: float = 1.0,
) -> float:
    """Normalised surface Dice (MONAI): the share of both boundaries lying within `tolerance` of the
    other (pixels, or mm with `spacing`). `both_empty` (1 unless a protocol says otherwise) when both
    are empty, 0 when exactly one is.
    surfels: weigh boundary elements by their area (MONAI's use_subvoxels), as DeepMind's
    surface-distance code does, which the CVPR24 challenge and MedSAM score with."""
    pred, truth = _check(pred, truth)
    special = _empty_case(pred, truth, both=both_empty, one=0.0)
    if special is not None:
        return special
    with _quiet_monai():
        value = compute_surface_dice(
            _as_tensor(pred),
            _as_tensor(truth),
            [float(tolerance)],
            include_background=True,
            spacing=spacing,
            use_subvoxels=surfels,
        )
    return float(value.item())


def ramanujan_perimeter(a: float, b: float) -> float:
    """Perimeter of an ellipse with semi-axes a, b: Ramanujan's second approximation, relative error
    below 1e-9 for any ellipse with b/a > 0.5 (every fetal head), far below a pixel."""
    h = ((a - b) / (a + b)) ** 2 if a + b > 0 else 0.0
    return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))


def head_circumference(mask: np.ndarray, pixel_size: float = 1.0) -> float:
    """HC18's metric: the perimeter of an ellipse fitted to the predicted head, times pixel size.

    The ellipse has the second moments of the largest component with its holes filled (a head is
    one object; a hollow or speckled prediction would otherwise bias the fit). NaN for an empty mask.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, n = ndimage.label(mask)
    if n == 0:
        return math.nan
    largest = labels == int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    props = regionprops(ndimage.binary_fill_holes(largest).astype(np.uint8))[0]
    return ramanujan_perimeter(props.axis_major_length / 2, props.axis_minor_length / 2) * pixel_size


def nanmean(values: Iterable[float | None]) -> tuple[float | None, int]:
    """(mean over the defined values, how many were NaN/None and left out); mean None if none are defined."""
    vals = [math.nan if v is None else float(v) for v in values]
    defined = [v for v in vals if not math.isnan(v)]
    return (float(np.mean(defined)) if defined else None), len(vals) - len(defined)


def score(
    pred: np.ndarray,
    truth: np.ndarray,
    pixel_size_mm: float | None = None,
    hc_mm: float | None = None,
    tolerance_px: float = NSD_TOLERANCE_PX,
    tolerance_mm: float = NSD_TOLERANCE_MM,
) -> dict[str, float]:
    """All metrics of one image: dice, iou, hd95, nsd; hd95_mm and nsd_mm with a pixel size; and with
    a reference head circumference, the predicted hc_mm and its absolute error hc_mm_error."""
    out = {
        "dice": dice(pred, truth),
        "iou": iou(pred, truth),
        "hd95": hd95(pred, truth),
        "nsd": nsd(pred, truth, tolerance_px),
    }
    if pixel_size_mm:
        out["hd95_mm"] = hd95(pred, truth, spacing=pixel_size_mm)
        out["nsd_mm"] = nsd(pred, truth, tolerance_mm, spacing=pixel_size_mm)
    if pixel_size_mm and hc_mm:
        out["hc_mm"] = head_circumference(pred, pixel_size_mm)
        out["hc_mm_error"] = abs(out["hc_mm"] - float(hc_mm))
    return out
