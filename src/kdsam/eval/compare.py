"""Side-by-side table of evaluations in the shape of the paper's: rows models, per dataset Dice/IoU/HD95/NSD
(and the Dice of each label, for datasets of label maps).

Input: metrics.json dicts (or their paths). Output: the table as JSON-able dict, markdown and HTML.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from kdsam.errors import KdsamError
from kdsam.eval.metrics import label_column, split_label_column
from kdsam.report.tables import html_table, markdown_table
from kdsam.utils.atomic import write_json, write_text

TABLE_METRICS = ("dice", "iou", "hd95", "nsd")
HEADERS = {"dice": "Dice", "iou": "IoU", "hd95": "HD95 (px)", "nsd": "NSD"}
MISSING = "–"


def dataset_label(location: str, split: str | None = None) -> str:
    """`kvasir:/data/Kvasir-SEG` + test -> `kvasir Kvasir-SEG (test)`: short enough for a column."""
    kind, _, path = location.partition(":")
    name = Path(path).name or path
    return f"{kind} {name}" + (f" ({split})" if split else "")


def _header(metric: str) -> str:
    split = split_label_column(metric)
    return f"Dice label {split[0]}" if split else HEADERS.get(metric, metric)


def _value(result: dict[str, Any], metric: str) -> float | None:
    split = split_label_column(metric)
    if split is None:
        return result["mean"].get(metric)
    return result.get("per_label", {}).get(split[0], {}).get("mean", {}).get(split[1])


def comparison(results: Sequence[dict[str, Any]], metrics: Sequence[str] = TABLE_METRICS) -> dict[str, Any]:
    """{"models", "datasets", "metrics", "cells": {model: {dataset: {metric: mean, "n_images": n}}}},
    models and datasets in first-seen order; a (model, dataset) pair given twice is an error. Label
    maps add one Dice column per label (`label_column`)."""
    labels = sorted({k for r in results for k in r.get("per_label", {})}, key=int)
    metrics = [*metrics, *(label_column(k, "dice") for k in labels)]
    models: dict[str, None] = {}
    datasets: dict[str, None] = {}
    cells: dict[str, dict[str, dict[str, Any]]] = {}
    for r in results:
        model, data = r["model"], dataset_label(r["data"], r.get("split"))
        if data in cells.get(model, {}):
            raise KdsamError(f"two evaluations of {model} on {data}: give each pair once")
        models[model] = None
        datasets[data] = None
        cell = {m: _value(r, m) for m in metrics}
        cells.setdefault(model, {})[data] = {**cell, "n_images": r["n_images"], "n_skipped": r["n_skipped"]}
    return {"models": list(models), "datasets": list(datasets), "metrics": list(metrics), "cells": cells}


def _fmt(metric: str, value: float | None) -> str:
    if value is None:
        return MISSING
    return f"{value:.2f}" if metric.startswith("hd95") else f"{value:.3f}"


def _rows(table: dict[str, Any]) -> list[list[str]]:
    """One list of formatted cells per model: its name, then each dataset's metrics."""
    rows = []
    for model in table["models"]:
        cells = [model]
        for data in table["datasets"]:
            cell = table["cells"][model].get(data, {})
            cells += [_fmt(m, cell.get(m)) for m in table["metrics"]]
        rows.append(cells)
    return rows


def _n_images(table: dict[str, Any], data: str) -> str:
    counts = sorted({c[data]["n_images"] for c in table["cells"].values() if data in c})
    return "/".join(str(n) for n in counts)


def to_markdown(table: dict[str, Any]) -> str:
    """Markdown has no two-level headers, so each column says `dataset metric`."""
    header = ["model"] + [f"{data} {_header(m)}" for data in table["datasets"] for m in table["metrics"]]
    counts = ", ".join(f"{d}: {_n_images(table, d)}" for d in table["datasets"])
    note = f"Images scored per dataset: {counts}. Means skip undefined values."
    return markdown_table(header, _rows(table)) + f"\n{note}\n"


def to_html(table: dict[str, Any]) -> str:
    """A table with one header row of datasets (spanning their metrics) and one of metrics."""
    n = len(table["metrics"])
    groups = [(f"{d} (n={_n_images(table, d)})", n) for d in table["datasets"]]
    header = ["model"] + [_header(m) for _ in table["datasets"] for m in table["metrics"]]
    return html_table(header, _rows(table), groups, css_class="kdsam-comparison")


def write_comparison(
    results: Sequence[dict[str, Any]], out_dir: str | Path, stem: str = "comparison"
) -> dict[str, Any]:
    """Write OUT/comparison.json, .md and .html; return the table."""
    out_dir = Path(out_dir)
    table = comparison(results)
    write_json(out_dir / f"{stem}.json", table)
    write_text(out_dir / f"{stem}.md", to_markdown(table))
    write_text(out_dir / f"{stem}.html", to_html(table))
    return table
