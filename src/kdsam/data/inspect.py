"""`kdsam data inspect`: what a dataset folder holds and which of its files cannot be used.

Every record is decoded once, so a truncated file or a mask of the wrong size shows up here, by
name, rather than in the middle of a training run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kdsam.data.registry import dataset_splits, is_volume_location, open_dataset, volume_set
from kdsam.data.volumes.slices import VolumeOptions

MAX_LISTED_PROBLEMS = 20


def inspect_dataset(
    location: str,
    seed: int = 0,
    split_file: str | Path | None = None,
    progress: bool = True,
    volume: VolumeOptions | None = None,
) -> dict[str, Any]:
    """The report written by `kdsam data inspect --json` (`inspect_volumes` for volume locations).

    splits: names per split (official, from the split file, or seeded over the labelled records).
    image_sizes: the smallest and largest height and width seen, each taken on its own.
    labels: images per label, for label-map masks (several structures per image); {} when every
    mask is binary.
    """
    if is_volume_location(location):
        return inspect_volumes(location, seed, split_file, progress, volume)
    dataset = open_dataset(location)
    splits = dataset_splits(location, seed, split_file)
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
        "data": location,
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


def inspect_volumes(
    location: str, seed: int, split_file: str | Path | None, progress: bool, volume: VolumeOptions | None
) -> dict[str, Any]:
    """Cases (each read once into the slice store), slices, cases per label, spacing range, problems."""
    vs = volume_set(location, volume, progress)
    splits = dataset_splits(location, seed, split_file, volume)
    labels: Counter[str] = Counter()
    for case in vs.cases:
        labels.update(vs.label_names.get(v, f"label {v}") for v in case.meta["label_values"])
    spacings = [c.meta["spacing"] for c in vs.cases if c.meta["spacing"]]
    depths = [c.depth for c in vs.cases]
    return {
        "data": location,
        "n_cases": len(vs.cases),
        "n_slices": sum(depths),
        "n_slices_with_foreground": sum(sum(c.meta["foreground"]) for c in vs.cases),
        "n_empty_label_maps": sum(c.labelled and not c.meta["label_values"] for c in vs.cases),
        "n_unlabelled": sum(not c.labelled for c in vs.cases),
        "modality": vs.modality,
        "label_names": {str(k): v for k, v in sorted(vs.label_names.items())},
        "labels": dict(sorted(labels.items())),
        "spacing_mm": {
            "min": [min(s[i] for s in spacings) for i in range(3)] if spacings else None,
            "max": [max(s[i] for s in spacings) for i in range(3)] if spacings else None,
        },
        "slices_per_case": {"min": min(depths), "max": max(depths)} if depths else None,
        "splits": {name: len(names) for name, names in splits.items()},
        "problems": vs.problems,
        "n_ok": len(vs.cases),
    }


def format_report(report: dict[str, Any]) -> str:
    """A short human-readable table of the report."""
    if "n_cases" in report:
        return _format_volumes(report)
    lines = [
        f"dataset   {report['data']}",
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
    return "\n".join(lines + _problem_lines(report["problems"]))


def _problem_lines(problems: list[dict[str, str]]) -> list[str]:
    if not problems:
        return []
    lines = ["problems (skipped):"] + [f"  {p['name']}: {p['error']}" for p in problems[:MAX_LISTED_PROBLEMS]]
    if len(problems) > MAX_LISTED_PROBLEMS:
        lines.append(f"  ... and {len(problems) - MAX_LISTED_PROBLEMS} more (write them all with --json)")
    return lines


def _format_volumes(report: dict[str, Any]) -> str:
    lines = [
        f"dataset   {report['data']}",
        f"cases     {report['n_cases']} ({len(report['problems'])} with problems, "
        f"{report['n_empty_label_maps']} with an empty label map, {report['n_unlabelled']} unlabelled); "
        f"modality {report['modality'] or 'not stated'}",
        f"slices    {report['n_slices']} ({report['n_slices_with_foreground']} with foreground)",
        "splits    " + "  ".join(f"{k} {v} cases" for k, v in report["splits"].items()),
    ]
    if report["labels"]:
        lines.append("labels    " + "  ".join(f"{k}: {v} cases" for k, v in report["labels"].items()))
    if report["spacing_mm"]["min"]:
        lo, hi = report["spacing_mm"]["min"], report["spacing_mm"]["max"]
        lines.append(
            "spacing   " + " .. ".join("x".join(f"{v:g}" for v in s) for s in (lo, hi)) + " mm (slice, row, col)"
        )
    return "\n".join(lines + _problem_lines(report["problems"]))
