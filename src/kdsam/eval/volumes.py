"""Scoring 3D label maps: per label Dice, NSD and HD95 in millimetres from the volume's real spacing.

`kdsam evaluate --predictions DIR --gts DIR` pairs volume files (NIfTI, MHA, NRRD) by name (a
prediction `case.nii.gz` for the truth `case.nii.gz`, `case.mha` for `case.mha`); labels are
compared one by one (label n of the prediction against label n of the truth, for every n in the
truth). NSD weighs surface elements by area (as DeepMind's
surface-distance code, which MedSAM and the CVPR24 challenge use), at a tolerance in mm.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data.medical import is_volume_file, read_volume
from kdsam.errors import BadFileError
from kdsam.eval import metrics

NSD_TOLERANCE_MM = 2.0


def label_scores(
    pred: np.ndarray, truth: np.ndarray, spacing: tuple[float, ...], tolerance_mm: float = NSD_TOLERANCE_MM
) -> list[dict[str, float]]:
    """One row per truth label (1..max): dice, nsd (at tolerance_mm), hd95_mm (NaN if one side is empty)."""
    rows = []
    for label in range(1, int(truth.max()) + 1):
        p, t = pred == label, truth == label
        rows.append(
            {
                "label": label,
                "dice": metrics.dice(p, t),
                "nsd": metrics.nsd(p, t, tolerance_mm, spacing=list(spacing), surfels=True),
                "hd95_mm": metrics.hd95(p, t, spacing=list(spacing)),
            }
        )
    return rows


def score_pair(pred_path: Path, truth_path: Path, tolerance_mm: float = NSD_TOLERANCE_MM) -> dict[str, Any]:
    """Scores of one predicted label volume against its truth, which must share its grid."""
    truth, pred = read_volume(truth_path), read_volume(pred_path)
    if pred.array.shape != truth.array.shape:
        raise BadFileError(f"{pred_path}: shape {pred.array.shape} but its truth is {truth.array.shape}")
    if not np.allclose(pred.affine, truth.affine, atol=1e-3):
        raise BadFileError(f"{pred_path}: on another grid than its truth (affines differ); resample it first")
    rows = label_scores(np.rint(pred.array).astype(int), np.rint(truth.array).astype(int), truth.spacing, tolerance_mm)
    mean = {k: metrics.nanmean(r[k] for r in rows)[0] for k in ("dice", "nsd", "hd95_mm")}
    return {"name": truth_path.name, "spacing": list(truth.spacing), **mean, "labels": rows}


def volume_pairs(pred_dir: Path, truth_dir: Path) -> tuple[list[tuple[Path, Path]], list[str]]:
    """(prediction, truth) pairs by file name, and the truth names with no prediction."""
    truths = sorted(p for p in truth_dir.iterdir() if is_volume_file(p))
    pairs = [(pred_dir / t.name, t) for t in truths if (pred_dir / t.name).is_file()]
    return pairs, [t.name for t in truths if not (pred_dir / t.name).is_file()]
