"""3D evaluation of a model on a volume dataset (nnunet:, msd:, npz:): each label of each test case
prompted with the 3D box of its ground truth (the `--box3d` protocol of `kdsam predict`), scored in
3D with the case's spacing: Dice, NSD at a tolerance in mm, HD95 in mm. 2D cases of an npz set
are scored in 2D (one slice, the box of each label).

`mean.dice` is the mean over cases of each case's mean over its labels; `per_label` means are keyed
by the label's name from dataset.json. A case with an empty label map has nothing to prompt for: it
is listed in `skipped` and left out of the means.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kdsam.data.volumes.slices import VolumeSet
from kdsam.data.volumes.store import StoredCase
from kdsam.eval import metrics
from kdsam.infer.volume import segment_stack
from kdsam.report.tables import markdown_table
from kdsam.utils.atomic import write_json, write_text

METRICS = ("dice", "nsd", "hd95_mm")


def label_box3d(labels: np.ndarray, value: int) -> np.ndarray:
    """(x0, y0, z0, x1, y1, z1), inclusive voxel indices, of one label in a (D, H, W) map."""
    zs, ys, xs = np.nonzero(labels == value)
    return np.array([xs.min(), ys.min(), zs.min(), xs.max(), ys.max(), zs.max()])


def score_label(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], tolerance_mm: float) -> dict:
    """Dice, NSD (surface elements weighed by area) and HD95 of one structure, in mm with `spacing`."""
    mm = [float(v) for v in spacing]
    return {
        "dice": metrics.dice(pred, truth),
        "nsd": metrics.nsd(pred, truth, tolerance_mm, spacing=mm, surfels=True),
        "hd95_mm": metrics.hd95(pred, truth, spacing=mm),
    }


def score_case(model: Any, case: StoredCase, names: dict[int, str], tolerance_mm: float) -> dict[str, Any]:
    """One case: every label prompted with its 3D box, scored on its own."""
    stack = np.asarray(case.slices())
    truth = np.asarray(case.labels())
    values = [int(v) for v in case.meta["label_values"]]
    start = time.perf_counter()
    pred = segment_stack(model, stack, np.stack([label_box3d(truth, v) for v in values]), where="label box")
    seconds = time.perf_counter() - start
    spacing = case.meta["spacing"] or [1.0, 1.0, 1.0]
    if case.depth == 1:  # a 2D case: scored in 2D, with its in-plane spacing
        pred, truth, spacing = pred[0], truth[0], spacing[1:]
    rows = {
        names.get(v, f"label {v}"): score_label(pred == i, truth == v, spacing, tolerance_mm)
        for i, v in enumerate(values, start=1)
    }
    mean = {k: metrics.nanmean(r[k] for r in rows.values())[0] for k in METRICS}
    return {"name": case.name, "spacing": spacing, "dims": 2 if case.depth == 1 else 3, **mean, "labels": rows,
            "seconds": seconds}  # fmt: skip


def evaluate_volume_set(
    model: Any, volumes: VolumeSet, cases: Sequence[str], tolerance_mm: float = 2.0, progress: bool = True
) -> dict[str, Any]:
    """Score `model` (a KDSam or an ONNX export's predictor) on the named cases of a volume set."""
    wanted = set(cases)
    chosen = [c for c in volumes.cases if c.name in wanted]
    per_case, skipped = [], []
    for case in tqdm(chosen, desc="evaluating cases", unit="case", disable=not progress):
        if not case.labelled or not case.meta["label_values"]:
            skipped.append({"name": case.name, "kind": "empty_label_map", "reason": "no label to prompt for"})
            continue
        per_case.append(score_case(model, case, volumes.label_names, tolerance_mm))
    names = sorted({k for row in per_case for k in row["labels"]})
    per_label = {
        name: {
            "n_cases": sum(name in r["labels"] for r in per_case),
            **{k: metrics.nanmean(r["labels"][name][k] for r in per_case if name in r["labels"])[0] for k in METRICS},
        }
        for name in names
    }
    return {
        "protocol": "3D box of each label's ground truth, propagated slice by slice (kdsam predict --box3d)",
        "nsd_tolerance_mm": tolerance_mm,
        "n_cases": len(per_case),
        "mean": {k: metrics.nanmean(r[k] for r in per_case)[0] for k in METRICS},
        "per_label": per_label,
        "per_case": per_case,
        "skipped": skipped,
        "n_skipped": len(skipped),
        "problems": volumes.problems,
    }


def write_result(result: dict[str, Any], out: Path) -> None:
    """metrics.json and per_case.csv (one row per case and label)."""
    write_json(out / "metrics.json", result)
    lines = ["case,label,dice,nsd,hd95_mm"]
    for row in result["per_case"]:
        lines += [
            f"{row['name']},{name},{number(s['dice'])},{number(s['nsd'])},{number(s['hd95_mm'])}"
            for name, s in row["labels"].items()
        ]
    write_text(out / "per_case.csv", "\n".join(lines) + "\n")


def table_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per model, mean Dice/NSD/HD95 and each label's Dice."""
    labels = sorted({k for r in results.values() for k in r["per_label"]})
    header = ["model", "cases", "Dice", "NSD", "HD95 (mm)", *(f"{k} Dice" for k in labels)]
    rows = [
        [model, str(r["n_cases"]), *(number(r["mean"][k]) for k in METRICS)]
        + [number(r["per_label"].get(k, {}).get("dice")) for k in labels]
        for model, r in results.items()
    ]
    return header, rows


def side_by_side(results: dict[str, dict[str, Any]]) -> str:
    """The models' results as one Markdown table."""
    return markdown_table(*table_rows(results))


def number(value: float | None) -> str:
    return "" if value is None or value != value else f"{value:.4f}"
