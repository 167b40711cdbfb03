"""Scoring a model, or a folder of saved predictions, on a dataset at each image's original resolution.

The result is the metrics.json schema:
{"model", "data", "split", "n_images", "mean": {metric: value}, "n_undefined": {metric: count},
 "per_image": [{"name", "dice", "iou", "hd95", "nsd", ...}], "n_skipped",
 "skipped": [{"name", "reason", "kind"}] (kind: empty_truth, unreadable, no_prediction or bad_prediction),
 "box_mode", "settings"}. Undefined values (hd95 where exactly one mask is empty) are null in it and
means leave them out (`n_undefined` says how many).
"""

from __future__ import annotations

import csv
import io
import math
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from kdsam.data.dataset import Dataset
from kdsam.data.imageio import BadFileError, read_mask, write_png
from kdsam.data.prompts import boxes_from_mask, jitter_boxes
from kdsam.data.sample import Sample
from kdsam.errors import KdsamError
from kdsam.eval import metrics
from kdsam.export.onnx_predictor import is_export, load_export
from kdsam.models.loading import MODEL_FILE, load_model
from kdsam.models.sam import KDSam
from kdsam.predictor import KDSamPredictor
from kdsam.report.overlays import PRED_COLOR, TRUTH_COLOR, draw_boxes, grid, overlay
from kdsam.utils.atomic import write_json, write_text

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
CASES_FILE = "cases.png"
ROW_META = ("class",)  # sample meta copied into per-image rows (BUSI's benign/malignant)
NOT_AVERAGED = ("name", "n_boxes", "hc_mm", *ROW_META)  # descriptions, not scores
EMPTY_TRUTH = "empty ground-truth mask (no lesion): a box prompt is undefined, left out of scoring"


class SkipSample(Exception):
    """One sample cannot be scored (no prediction file, wrong size): recorded with the reason."""

    def __init__(self, reason: str, kind: str = "no_prediction") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Prompting:
    """How box prompts are derived from the ground truth: deterministic, or jittered with a seed.

    The jitter generator is seeded by (seed, sample name), so a sample gets the same boxes whatever
    the order or subset it is evaluated in (the case figure re-derives them).
    """

    box_mode: str = "components"
    min_area: int = 100
    jitter_seed: int | None = None

    def boxes(self, sample: Sample) -> np.ndarray:
        boxes = boxes_from_mask(sample.mask, self.box_mode, self.min_area)
        if self.jitter_seed is None:
            return boxes
        rng = np.random.default_rng([self.jitter_seed, zlib.crc32(sample.name.encode())])
        return jitter_boxes(boxes, sample.mask.shape, rng)


class Segmenter(Protocol):
    """Anything that turns a sample and its box prompts into an HxW bool mask."""

    label: str
    prompted: bool

    def __call__(self, sample: Sample, boxes: np.ndarray) -> np.ndarray: ...


class ModelSegmenter:
    """A kdsam model behind `KDSamPredictor`: one embedding per image, the boxes' masks united."""

    prompted = True

    def __init__(self, predictor: KDSamPredictor, label: str) -> None:
        self.predictor = predictor
        self.label = label

    def __call__(self, sample: Sample, boxes: np.ndarray) -> np.ndarray:
        self.predictor.set_image(sample.image)
        return self.predictor.segment(boxes)


class PredictionFolder:
    """Masks a model from elsewhere saved as <sample name>.png (any layout `read_mask` reads)."""

    prompted = False

    def __init__(self, folder: str | Path, label: str | None = None) -> None:
        self.folder = Path(folder)
        if not self.folder.is_dir():
            raise KdsamError(f"{self.folder}: predictions folder not found (expected <sample name>.png files)")
        self.label = label or str(self.folder)

    def __call__(self, sample: Sample, boxes: np.ndarray) -> np.ndarray:
        path = self.folder / f"{sample.name}.png"
        if not path.is_file():
            raise SkipSample(f"no prediction: {path} not found")
        try:
            pred = read_mask(path)
        except BadFileError as err:
            raise SkipSample(str(err), "bad_prediction") from err
        if pred.shape != sample.mask.shape:
            h, w = sample.mask.shape
            raise SkipSample(
                f"{path}: prediction is {pred.shape[1]}x{pred.shape[0]}, its image is {w}x{h}", "bad_prediction"
            )
        return pred


Source = KDSam | KDSamPredictor | Segmenter | str | Path


def as_segmenter(source: Source, label: str | None = None) -> Segmenter:
    """A model, predictor, segmenter, or a string: `teacher:NAME[=CKPT]`, a run folder (or model.pt),
    or else a folder of saved predictions."""
    if isinstance(source, (ModelSegmenter, PredictionFolder)):
        return source
    if isinstance(source, KDSam):
        return ModelSegmenter(KDSamPredictor(source), label or source.name)
    if isinstance(source, KDSamPredictor):
        return ModelSegmenter(source, label or getattr(source.model, "name", "model"))
    path = Path(str(source)).expanduser()
    if str(source).startswith("teacher:") or path.is_file() or (path / MODEL_FILE).is_file():
        return ModelSegmenter(KDSamPredictor(load_model(str(source))), label or str(source))
    if is_export(path):  # an ONNX export folder, run by onnxruntime (fp32)
        return ModelSegmenter(load_export(path), label or str(source))
    return PredictionFolder(path, label)


def _json_value(value: Any) -> Any:
    """NaN is not JSON: undefined metrics are written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _summary(per_image: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, int]]:
    keys = [k for k in per_image[0] if k not in NOT_AVERAGED] if per_image else []
    mean, undefined = {}, {}
    for key in keys:
        mean[key], n_nan = metrics.nanmean(row.get(key) for row in per_image)
        if n_nan:
            undefined[key] = n_nan
    return mean, undefined


def evaluate(
    model_or_predictions: Source,
    dataset: Dataset,
    box_mode: str = "components",
    min_area: int = 100,
    jitter_seed: int | None = None,
    *,
    tolerance_px: float = metrics.NSD_TOLERANCE_PX,
    tolerance_mm: float = metrics.NSD_TOLERANCE_MM,
    label: str | None = None,
    save_predictions: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Score every readable sample; return the metrics.json dict (see the module docstring).

    Models get box prompts from the ground truth (`Prompting`) and predict at the original image
    size. Samples with an empty ground truth, unreadable files and missing predictions are listed
    in "skipped" with the reason. `save_predictions`: also write each predicted mask as NAME.png.
    """
    segmenter = as_segmenter(model_or_predictions, label)
    prompting = Prompting(box_mode, min_area, jitter_seed)
    known_problems = len(dataset.problems)
    per_image: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    samples = tqdm(
        dataset.samples(), total=len(dataset), desc=f"evaluate {segmenter.label}", unit="img", disable=not progress
    )
    for sample in samples:
        if not sample.mask.any():
            skipped.append({"name": sample.name, "reason": EMPTY_TRUTH, "kind": "empty_truth"})
            continue
        boxes = prompting.boxes(sample) if segmenter.prompted else np.zeros((0, 4), np.float32)
        try:
            pred = segmenter(sample, boxes)
        except SkipSample as err:
            skipped.append({"name": sample.name, "reason": str(err), "kind": err.kind})
            continue
        if save_predictions is not None:
            write_png(Path(save_predictions) / f"{sample.name}.png", pred)
        scores = metrics.score(
            pred, sample.mask, sample.meta.get("pixel_size_mm"), sample.meta.get("hc_mm"), tolerance_px, tolerance_mm
        )
        row: dict[str, Any] = {"name": sample.name, **{k: _json_value(v) for k, v in scores.items()}}
        row.update({k: sample.meta[k] for k in ROW_META if k in sample.meta})
        if segmenter.prompted:
            row["n_boxes"] = len(boxes)
        per_image.append(row)
    skipped += [
        {"name": p["name"], "reason": p["error"], "kind": "unreadable"} for p in dataset.problems[known_problems:]
    ]
    mean, undefined = _summary(per_image)
    return {
        "model": segmenter.label,
        "data": dataset.spec,
        "split": dataset.split,
        "n_images": len(per_image),
        "mean": mean,
        "n_undefined": undefined,
        "per_image": per_image,
        "n_skipped": len(skipped),
        "skipped": skipped,
        "box_mode": box_mode if segmenter.prompted else None,
        "settings": {
            "prompts": "boxes from the ground truth" if segmenter.prompted else "none (saved predictions)",
            "min_area": min_area,
            "jitter_seed": jitter_seed,
            "resolution": "original image size",
            "nsd_tolerance_px": tolerance_px,
            "nsd_tolerance_mm": tolerance_mm,
            "empty_ground_truth": "left out (box prompt undefined), listed in skipped",
            "means": "over defined values; hd95 is undefined (null) where exactly one mask is empty, "
            "and n_undefined counts what each mean left out",
            **(settings or {}),
        },
    }


def per_image_csv(result: dict[str, Any]) -> str:
    """The per-image rows as CSV (columns in first-seen order; undefined values are empty cells)."""
    columns: dict[str, None] = {}
    for row in result["per_image"]:
        columns.update(dict.fromkeys(row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns) or ["name"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(result["per_image"])
    return buf.getvalue()


def pick_cases(result: dict[str, Any], key: str = "dice") -> list[tuple[str, str]]:
    """[(label, sample name)] for the best, median and worst image by `key` (fewer if fewer images)."""
    rows = sorted((r for r in result["per_image"] if r.get(key) is not None), key=lambda r: (-r[key], r["name"]))
    if not rows:
        return []
    picks = [("best", rows[0]), ("median", rows[len(rows) // 2]), ("worst", rows[-1])]
    seen: set[str] = set()
    out = []
    for label, row in picks:
        if row["name"] not in seen:
            seen.add(row["name"])
            out.append((f"{label}: {row['name']}\nDice {row[key]:.3f}", row["name"]))
    return out


def write_cases(
    result: dict[str, Any], dataset: Dataset, segmenter: Segmenter, prompting: Prompting, path: str | Path
) -> Path | None:
    """PNG of best / median / worst cases: image with its prompts, truth, prediction. The three are
    predicted again (cheaper than holding every prediction of a test set in memory)."""
    cases = pick_cases(result)
    if not cases:
        return None
    rows, titles = [], []
    for title, name in cases:
        sample = dataset.subset([name])[0]
        boxes = prompting.boxes(sample) if segmenter.prompted else np.zeros((0, 4), np.float32)
        pred = segmenter(sample, boxes)
        rows.append(
            [
                draw_boxes(sample.image, boxes),
                overlay(sample.image, sample.mask, TRUTH_COLOR),
                overlay(sample.image, pred, PRED_COLOR),
            ]
        )
        titles.append(title)
    return grid(rows, path, row_titles=titles, col_titles=["image + prompts", "ground truth", "prediction"])


def check_writable(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse to replace an earlier evaluation unless asked (before any work is done)."""
    target = Path(out_dir) / METRICS_FILE
    if target.exists() and not overwrite:
        raise KdsamError(f"{target} exists: pass --overwrite to replace it, or choose another --out")


def run_evaluation(
    source: Source,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    label: str | None = None,
    box_mode: str = "components",
    min_area: int = 100,
    jitter_seed: int | None = None,
    figure: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """evaluate() and write OUT/metrics.json (atomic), OUT/per_image.csv and OUT/cases.png.
    `options` are evaluate()'s other keyword arguments (tolerances, settings, progress, ...)."""
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)
    segmenter = as_segmenter(source, label)
    result = evaluate(segmenter, dataset, box_mode, min_area, jitter_seed, **options)
    write_json(out_dir / METRICS_FILE, result)
    write_text(out_dir / PER_IMAGE_FILE, per_image_csv(result))
    if figure:
        write_cases(result, dataset, segmenter, Prompting(box_mode, min_area, jitter_seed), out_dir / CASES_FILE)
    return result
