"""`kdsam data inspect`: what a dataset folder holds and which of its files cannot be used.

Every record is decoded once, so a truncated file or a mask of the wrong size shows up here, by
name, rather than in the middle of a training run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kdsam.data.registry import dataset_splits, open_dataset

MAX_LISTED_PROBLEMS = 20


def inspect_dataset(
    spec: str, seed: int = 0, split_file: str | Path | None = None, progress: bool = True
) -> dict[str, Any]:
    """The report written by `kdsam data inspect --json`.

    splits: names per split (official, from the split file, or seeded over the labelled records).
    image_sizes: the smallest and largest height and width seen, each taken on its own.
    labels: images per label, for label-map masks (several structures per image); {} when every
    mask is binary.
    """
    dataset = open_dataset(spec)
    splits = dataset_splits(spec, seed, split_file)
    heights, widths = [], []
    n_empty = 0
    labels: Counter[int] = Counter()
    for sample in tqdm(dataset.samples(), total=len(dataset), desc="decoding", unit="img", disable=not progress):
        heights.append(sample.image.shape[0])
        widths.append(sample.image.shape[1])
        n_empty += not sample.mask.any()
        labels.update(sample.label_ids)
    classes = Counter(str(r.meta["class"]) for r in dataset.records if "class" in r.meta)
    return {
        "spec": spec,
        "n_records": len(dataset),
        "n_ok": len(heights),
        "n_empty_masks": n_empty,
        "problems": dataset.problems,
        "splits": {name: len(names) for name, names in splits.items()},
        "classes": dict(sorted(classes.items())),
        "labels": {str(k): n for k, n in sorted(labels.items())} if set(labels) - {1} else {},
        "image_sizes": {
            "min_hw": [min(heights), min(widths)] if heights else None,
            "max_hw": [max(heights), max(widths)] if heights else None,
        },
    }


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of the report."""
    lines = [
        f"dataset   {report['spec']}",
        f"records   {report['n_records']} ({report['n_ok']} readable, {len(report['problems'])} with problems, "
        f"{report['n_empty_masks']} with an empty mask)",
        "splits    " + "  ".join(f"{k} {v}" for k, v in report["splits"].items()),
    ]
    if report["classes"]:
        lines.append("classes   " + "  ".join(f"{k} {v}" for k, v in report["classes"].items()))
    if report["labels"]:
        lines.append("labels    " + "  ".join(f"{k}: {v} images" for k, v in report["labels"].items()))
    sizes = report["image_sizes"]
    if sizes["min_hw"]:
        lo, hi = sizes["min_hw"], sizes["max_hw"]
        lines.append(f"size HxW  {lo[0]}x{lo[1]} .. {hi[0]}x{hi[1]}")
    problems = report["problems"]
    if problems:
        lines.append("problems (skipped):")
        lines += [f"  {p['name']}: {p['error']}" for p in problems[:MAX_LISTED_PROBLEMS]]
        if len(problems) > MAX_LISTED_PROBLEMS:
            lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more (write them all with --json)")
    return "\n".join(lines)
