"""The CVPR24 "MedSAM on Laptop" scores, as its evaluation/compute_metrics.py computes them.

Per case, for every label 1..max(gts): DSC (NaN when prediction and truth are both empty, and a
NaN label makes the case's mean NaN, as np.mean does there) and NSD at a 2.0 tolerance with
surface elements weighed by area (DeepMind's surface-distance code; MONAI's use_subvoxels gives the
same numbers). NSD is only computed when the case's DSC exceeds 0.2, else it is 0. 3D cases use the
truth's `spacing` on the array axes in the order stored; 2D cases are scored as HxWx1 volumes of
spacing 1, so the slab's faces count as surface (the official script's choice, kept for
comparability). The case's score is the mean over its labels.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.errors import BadFileError
from kdsam.eval import metrics
from kdsam.infer.challenge import is_3d_name

TOLERANCE = 2.0
NSD_MIN_DSC = 0.2


def class_dsc(pred: np.ndarray, truth: np.ndarray) -> float:
    """One label's DSC; NaN when both are empty (the official compute_dice_coefficient)."""
    return metrics.dice(pred, truth, both_empty=math.nan)


def class_nsd(pred: np.ndarray, truth: np.ndarray, spacing: list[float]) -> float:
    """One label's NSD at TOLERANCE with `spacing` along the array axes; NaN when both are empty
    (0/0 in the official code)."""
    return metrics.nsd(pred, truth, TOLERANCE, spacing=spacing, surfels=True, both_empty=math.nan)


def case_scores(segs: np.ndarray, gts: np.ndarray, spacing: list[float] | None, three_d: bool) -> dict[str, float]:
    """{"dsc", "nsd"} of one case."""
    segs, gts = np.asarray(segs), np.asarray(gts)
    if segs.shape != gts.shape:
        raise ValueError(f"segs has shape {segs.shape} but gts {gts.shape}")
    labels = range(1, int(gts.max()) + 1)
    dsc = float(np.mean([class_dsc(segs == i, gts == i) for i in labels])) if len(labels) else math.nan
    if not dsc > NSD_MIN_DSC:
        return {"dsc": dsc, "nsd": 0.0}
    if not three_d:
        segs, gts, spacing = segs[..., None], gts[..., None], [1.0, 1.0, 1.0]
    nsd = float(np.mean([class_nsd(segs == i, gts == i, list(spacing or [1.0] * 3)) for i in labels]))
    return {"dsc": dsc, "nsd": nsd}


def score_case(seg_path: Path, gt_path: Path) -> dict[str, Any]:
    """The row of one case: name, dsc, nsd."""
    try:
        with np.load(gt_path, allow_pickle=False) as gt:
            gts = gt["gts"]
            spacing = [float(v) for v in gt["spacing"]] if "spacing" in gt else None
        with np.load(seg_path, allow_pickle=False) as seg:
            segs = seg["segs"]
    except (OSError, ValueError, KeyError, EOFError, TypeError, zipfile.BadZipFile) as err:  # a truncated npz too
        raise BadFileError(f"{seg_path}: cannot read segs/gts against {gt_path.name} ({err})") from err
    three_d = is_3d_name(gt_path.name)
    if three_d and spacing is None:
        raise BadFileError(f"{gt_path}: a 3D case's truth needs 'spacing'")
    try:
        return {"name": gt_path.name, **case_scores(segs, gts, spacing, three_d)}
    except ValueError as err:
        raise BadFileError(f"{seg_path}: {err}") from err
