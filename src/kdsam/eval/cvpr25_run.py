"""`kdsam evaluate --protocol cvpr25`: the CVPR25 interactive protocol (kdsam.eval.cvpr25) for one
or more models on a labelled volume dataset, side by side.

Cases come from a volume location: `npz:PATH` is read here (imgs, gts, spacing and, when a case has
them, its challenge `boxes`, object arrays through kdsam.infer.safe_npz), the other volume layouts
(nnunet:, msd:) through the dataset registry. Writes metrics.json (per model: means, per case with
every step), per_case.csv, table.md and dsc_per_step.png (mean DSC after the box and each click).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from kdsam.errors import BadFileError, KdsamError
from kdsam.eval.cvpr25 import CLICKS, VolumeCase, run_case
from kdsam.eval.evaluate import METRICS_FILE, check_writable
from kdsam.utils.atomic import write_json, write_text

PLOT_FILE = "dsc_per_step.png"
TABLE_FILE = "table.md"
SUMMARY = ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final", "seconds_per_step")


def _npz_case(path: Path, name: str) -> VolumeCase:
    from kdsam.infer.safe_npz import load_npz

    data = load_npz(path)
    if "imgs" not in data or "gts" not in data:
        raise BadFileError(f"{path}: a labelled case needs 'imgs' and 'gts' (has {', '.join(data)})")
    imgs, gts = data["imgs"], data["gts"]
    if imgs.ndim != 3 or gts.shape != imgs.shape:
        raise BadFileError(f"{path}: imgs {imgs.shape} and gts {gts.shape} must be one DxHxW shape")
    spacing = [float(v) for v in data["spacing"]] if "spacing" in data else [1.0, 1.0, 1.0]
    boxes = data["boxes"].tolist() if "boxes" in data and data["boxes"].dtype.hasobject else None
    return VolumeCase(name, np.clip(imgs, 0, 255).astype(np.uint8), gts.astype(np.int32), spacing, boxes)


def read_cases(location: str, names: set[str] | None = None) -> tuple[list[VolumeCase], list[dict[str, str]]]:
    """The labelled 3D cases of a volume location (only `names`, when given); the skipped ones with why."""
    from kdsam.data.registry import ADAPTERS, VOLUME_KINDS, parse_location
    from kdsam.data.volumes.slices import VolumeOptions, read_case

    kind, root = parse_location(location)
    if kind not in VOLUME_KINDS or kind == "images":
        raise KdsamError(f"--protocol cvpr25 needs labelled volumes: npz:, nnunet: or msd: (not {kind}:)")
    listing = ADAPTERS[kind].cases(root, 0)
    cases, skipped = [], list(listing.problems)
    for case in listing.cases:
        if names is not None and case.name not in names:
            continue
        try:
            if kind == "npz":
                cases.append(_npz_case(case.image, case.name))
                continue
            arrays = read_case(case, VolumeOptions(), listing.label_names)
        except (BadFileError, KdsamError) as err:
            skipped.append({"name": case.name, "reason": str(err)})
            continue
        if arrays.labels is None or arrays.slices.ndim != 3:
            skipped.append({"name": case.name, "reason": "no labels, or not a grey volume"})
            continue
        spacing = list(arrays.spacing or (1.0, 1.0, 1.0))
        cases.append(VolumeCase(case.name, arrays.slices, np.asarray(arrays.labels), spacing))
    kept = [c for c in cases if (c.gts > 0).any()]
    skipped += [{"name": c.name, "reason": "no labelled voxel"} for c in cases if not (c.gts > 0).any()]
    if not kept:
        raise KdsamError(f"{location}: no labelled 3D case to evaluate ({len(skipped)} skipped)")
    return kept, skipped


def _means(rows: list[dict[str, Any]]) -> dict[str, float]:
    means = {k: float(np.mean([r[k] for r in rows])) for k in SUMMARY}
    for step in range(CLICKS + 1):
        means[f"DSC_{step + 1}"] = float(np.mean([r["steps"][step]["dsc"] for r in rows]))
        means[f"NSD_{step + 1}"] = float(np.mean([r["steps"][step]["nsd"] for r in rows]))
    return means


def table(results: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per model, the challenge's summary values and the DSC after each step."""
    steps = [f"DSC_{i + 1}" for i in range(CLICKS + 1)]
    head = ["model", *SUMMARY, *steps]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for label, result in results.items():
        mean = result["mean"]
        lines.append("| " + " | ".join([label, *(f"{mean[k]:.4f}" for k in (*SUMMARY, *steps))]) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict[str, dict[str, Any]], path: Path) -> Path:
    from kdsam.report.overlays import agg_figure, save_figure

    fig = agg_figure((5, 3.5))
    ax = fig.subplots()
    for label, result in results.items():
        ax.plot(range(CLICKS + 1), [result["mean"][f"DSC_{i + 1}"] for i in range(CLICKS + 1)], marker=".", label=label)
    ax.set_xticks(range(CLICKS + 1), ["box", *(str(i) for i in range(1, CLICKS + 1))])
    ax.set_xlabel("step (box, then clicks)")
    ax.set_ylabel("mean DSC")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def evaluate_protocol(
    models: dict[str, Any],
    location: str,
    out: Path,
    overwrite: bool = False,
    names: set[str] | None = None,
    use_boxes: bool = True,
) -> dict[str, Any]:
    """Run every model (label -> a KDSam or an export's predictor) on every case; the metrics dict."""
    check_writable(out, overwrite)
    cases, skipped = read_cases(location, names)
    results: dict[str, dict[str, Any]] = {}
    for label, model in models.items():
        rows = [run_case(model, case, use_boxes) for case in tqdm(cases, desc=f"cvpr25 {label}", unit="case")]
        results[label] = {"mean": _means(rows), "per_case": rows}
    metrics = {
        "protocol": "cvpr25",
        "data": location,
        "n_cases": len(cases),
        "boxes": "the cases' own, else from the truth (z_mid: the largest slice)" if use_boxes else "none",
        "models": results,
        "skipped": skipped,
    }
    write_json(out / METRICS_FILE, metrics)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    steps = [f"{m}_{i + 1}" for i in range(CLICKS + 1) for m in ("DSC", "NSD")]
    writer.writerow(["model", "name", *SUMMARY, *steps])
    for label, result in results.items():
        for r in result["per_case"]:
            per_step = [s[k] for s in r["steps"] for k in ("dsc", "nsd")]
            writer.writerow([label, r["name"], *(f"{r[k]:.6f}" for k in SUMMARY), *(f"{v:.6f}" for v in per_step)])
    write_text(out / "per_case.csv", buf.getvalue())
    write_text(out / TABLE_FILE, table(results))
    plot(results, out / PLOT_FILE)
    return metrics
