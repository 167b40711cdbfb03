"""`kdsam evaluate --predictions DIR --gts DIR`: score a folder of 3D or challenge predictions.

Truth files decide what is scored: challenge npz cases (`gts`) with the CVPR24 scores
(kdsam.eval.challenge), or label volumes (NIfTI, MHA, NRRD) with per-label Dice, NSD and HD95 in mm
(kdsam.eval.volumes). Writes metrics.json (means, per case, skipped with reasons, seconds per case
when the predictions folder has kdsam predict's efficiency CSV) and per_case.csv.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kdsam.data.medical import is_volume_file
from kdsam.errors import BadFileError, KdsamError
from kdsam.eval import challenge, metrics, volumes
from kdsam.eval.evaluate import METRICS_FILE, check_writable
from kdsam.infer.efficiency import read_times
from kdsam.utils.atomic import finite, write_json, write_text

PER_CASE_FILE = "per_case.csv"


def evaluate_cases(
    pred_dir: Path, truth_dir: Path, out: Path, overwrite: bool = False, tolerance_mm: float = volumes.NSD_TOLERANCE_MM
) -> dict[str, Any]:
    """Score every truth file that has a prediction of the same name; the metrics.json dict."""
    for folder, flag in ((pred_dir, "--predictions"), (truth_dir, "--gts")):
        if not folder.is_dir():
            raise KdsamError(f"{flag} {folder}: not a folder")
    check_writable(out, overwrite)
    npz = sorted(truth_dir.glob("*.npz"))
    label_files = sorted(p for p in truth_dir.iterdir() if is_volume_file(p))
    if not npz and not label_files:
        raise KdsamError(f"--gts {truth_dir}: no challenge .npz cases or label volumes (NIfTI, MHA, NRRD) found")
    kind = "cvpr24" if npz else "volumes"
    times = read_times(pred_dir)
    rows, skipped = [], []
    for truth in tqdm(npz or label_files, desc="evaluate", unit="case"):
        pred = pred_dir / truth.name
        if not pred.is_file():
            skipped.append({"name": truth.name, "reason": f"no prediction {pred}", "kind": "no_prediction"})
            continue
        try:
            row = challenge.score_case(pred, truth) if npz else volumes.score_pair(pred, truth, tolerance_mm)
        except BadFileError as err:
            skipped.append({"name": truth.name, "reason": str(err), "kind": "bad_prediction"})
            continue
        if truth.name in times:
            row["seconds"] = times[truth.name]
        rows.append(finite(row))  # NaN -> null: metrics.json stays valid JSON
    keys = ("dsc", "nsd", "seconds") if npz else ("dice", "nsd", "hd95_mm", "seconds")
    means = {k: metrics.nanmean(r.get(k) for r in rows)[0] for k in keys}
    result = {
        "kind": kind,
        "predictions": str(pred_dir),
        "gts": str(truth_dir),
        "n_cases": len(rows),
        "mean": means,
        "per_case": rows,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "settings": {"nsd_tolerance": challenge.TOLERANCE if npz else tolerance_mm},
    }
    write_json(out / METRICS_FILE, result)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["name", *keys], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out / PER_CASE_FILE, buf.getvalue())
    return result
