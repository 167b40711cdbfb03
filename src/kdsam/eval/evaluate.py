"""Scoring a model, or a folder of saved predictions, on a dataset at each image's original resolution.

The result is the metrics.json schema:
{"model", "data", "split", "n_images", "mean": {metric: value}, "n_undefined": {metric: count},
 "per_image": [{"name", "dice", "iou", "hd95", "nsd", ...}], "n_skipped",
 "skipped": [{"name", "reason", "kind"}] (kind: empty_truth, unreadable, no_prediction or bad_prediction),
 "coverage": {"n_scored", "n_expected", "missing": [names without a usable prediction]}, "box_mode",
 "settings"}, plus for a dataset of label maps "per_label": {label: {"n_images", "mean", "n_undefined"}}
(its rows hold label<K>_<metric> columns and the mean over their labels). Undefined values (hd95
where exactly one mask is empty) are null in it and means leave them out (`n_undefined` says how many).
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
from kdsam.data.imageio import read_labels, write_png
from kdsam.data.prompts import MIN_AREA, boxes_from_mask, jitter_boxes
from kdsam.data.sample import Sample
from kdsam.errors import BadFileError, KdsamError
from kdsam.eval import metrics
from kdsam.eval.interactive import PromptProtocol, interactive_scores, parse_prompt
from kdsam.models.loading import load_predictor
from kdsam.models.sam import KDSam
from kdsam.models.spec import is_model_folder
from kdsam.predictor import KDSamPredictor, Predictor
from kdsam.report.overlays import PRED_COLOR, TRUTH_COLOR, draw_boxes, grid, overlay
from kdsam.utils.atomic import write_json, write_text

METRICS_FILE = "metrics.json"
PER_IMAGE_FILE = "per_image.csv"
CASES_FILE = "cases.png"
ROW_META = ("class",)  # sample meta copied into per-image rows (BUSI's benign/malignant)
NOT_AVERAGED = ("name", "n_boxes", "hc_mm", *ROW_META)  # descriptions, not scores
EMPTY_TRUTH = "empty ground-truth mask (no lesion): a box prompt is undefined, left out of scoring"
NOT_COVERED = ("no_prediction", "bad_prediction")  # the source's fault, not the dataset's


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
    min_area: int = MIN_AREA
    jitter_seed: int | None = None

    def boxes(self, sample: Sample) -> np.ndarray:
        boxes = boxes_from_mask(sample.mask, self.box_mode, self.min_area)
        if self.jitter_seed is None:
            return boxes
        rng = np.random.default_rng([self.jitter_seed, zlib.crc32(sample.name.encode())])
        return jitter_boxes(boxes, sample.mask.shape, rng)


class Segmenter(Protocol):
    """Anything that turns a sample and its box prompts into an HxW bool mask.

    `extras`: scores of the last call beyond its mask (Dice after each click), added to its row.
    """

    label: str
    prompted: bool
    extras: dict[str, Any]

    def __call__(self, sample: Sample, boxes: np.ndarray) -> np.ndarray: ...


class ModelSegmenter:
    """A kdsam model behind `KDSamPredictor` (or an export's `OnnxPredictor`, same API): one
    embedding per image, the objects' masks united.

    With the default box protocol each object gets its box; an interactive protocol (points,
    clicks) runs `kdsam.eval.interactive` on each object instead and records Dice per click.
    """

    prompted = True

    def __init__(
        self,
        predictor: Predictor,
        label: str,
        protocol: PromptProtocol | None = None,
        min_area: int = MIN_AREA,
    ) -> None:
        self.predictor = predictor
        self.label = label
        self.protocol = protocol or parse_prompt("box")
        self.min_area = min_area
        self.extras: dict[str, Any] = {}
        self._image: np.ndarray | None = None  # held, so `is` cannot match a freed image's reused id

    def __call__(self, sample: Sample, boxes: np.ndarray) -> np.ndarray:
        if sample.image is not self._image:  # the labels of one image share its embedding
            self.predictor.set_image(sample.image)
            self._image = sample.image
        if not self.protocol.interactive:
            return self.predictor.segment(boxes)
        pred, self.extras = interactive_scores(self.predictor, sample.mask, self.protocol, self.min_area)
        return pred


class PredictionFolder:
    """Masks a model from elsewhere saved as <sample name>.png (any layout `read_labels` reads); for
    a multi-label ground truth the file must be a label map with the same label values."""

    prompted = False
    extras: dict[str, Any] = {}  # noqa: RUF012 (never written)

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
            labels = read_labels(path)
        except BadFileError as err:
            raise SkipSample(str(err), "bad_prediction") from err
        if labels.shape != sample.mask.shape:
            h, w = sample.mask.shape
            raise SkipSample(
                f"{path}: prediction is {labels.shape[1]}x{labels.shape[0]}, its image is {w}x{h}", "bad_prediction"
            )
        return labels == sample.meta["label"] if "label" in sample.meta else labels > 0


Source = KDSam | Predictor | Segmenter | str | Path


def as_segmenter(source: Source, label: str | None = None) -> Segmenter:
    """A model, predictor, segmenter, or a string: a MODEL (kdsam.models.spec), or else a folder of
    saved predictions (a folder that is neither a run nor an ONNX export)."""
    if isinstance(source, (ModelSegmenter, PredictionFolder)):
        return source
    if isinstance(source, KDSam):
        return ModelSegmenter(KDSamPredictor(source), label or source.name)
    if isinstance(source, Predictor):  # KDSamPredictor or OnnxPredictor
        return ModelSegmenter(source, label or getattr(getattr(source, "model", None), "name", "model"))
    path = Path(str(source)).expanduser()
    if path.is_dir() and not is_model_folder(path):
        return PredictionFolder(path, label)
    return ModelSegmenter(load_predictor(str(source)), label or str(source))


def with_protocol(segmenter: Segmenter, prompt: str, min_area: int = MIN_AREA) -> Segmenter:
    """`segmenter` prompted by `prompt` (`kdsam.eval.interactive`): itself when it already is, else a
    new ModelSegmenter over the same predictor; the one given is never changed (callers reuse it)."""
    protocol = parse_prompt(prompt)
    if not isinstance(segmenter, ModelSegmenter):
        if protocol.interactive:
            raise KdsamError(f"--prompt {prompt} needs a model to prompt; saved predictions take no prompts")
        return segmenter
    if segmenter.protocol == protocol and segmenter.min_area == min_area:
        return segmenter
    return ModelSegmenter(segmenter.predictor, segmenter.label, protocol, min_area)


@dataclass
class Answer:
    """A segmenter's answer for one sample: per label (one, label 1, for a binary mask) the part of
    the sample that is that label, its prompts, the prediction and the segmenter's extras."""

    labels: list[int]
    parts: list[Sample]
    boxes: list[np.ndarray]
    preds: list[np.ndarray]
    extras: list[dict[str, Any]]

    def prediction(self, multi_label: bool) -> np.ndarray:
        """The bool union, or for a multi-label sample a label map (later labels over earlier)."""
        if not multi_label:
            return np.logical_or.reduce(self.preds)
        out = np.zeros(self.preds[0].shape, np.uint8 if max(self.labels) < 256 else np.uint16)
        for k, pred in zip(self.labels, self.preds, strict=True):
            out[pred] = k
        return out

    @property
    def all_boxes(self) -> np.ndarray:
        return np.concatenate(self.boxes)


def answer(segmenter: Segmenter, sample: Sample, prompting: Prompting) -> Answer:
    """Prompt and predict each label of `sample` on its own (one embedding per image)."""
    out = Answer([], [], [], [], [])
    for k, part in sample.by_label():
        boxes = prompting.boxes(part) if segmenter.prompted else np.zeros((0, 4), np.float32)
        out.labels.append(k)
        out.parts.append(part)
        out.boxes.append(boxes)
        out.preds.append(segmenter(part, boxes))
        out.extras.append(dict(segmenter.extras))
    return out


def _row(sample: Sample, ans: Answer, tolerance_px: float, tolerance_mm: float) -> dict[str, Any]:
    """One per-image row. A multi-label sample is scored per label (columns label<K>_<metric>) and
    its row holds the mean over its labels, as the CVPR24 challenge scores a case."""
    meta = sample.meta
    scores = [
        metrics.score(pred, part.mask, meta.get("pixel_size_mm"), meta.get("hc_mm"), tolerance_px, tolerance_mm)
        for part, pred in zip(ans.parts, ans.preds, strict=True)
    ]
    row: dict[str, Any] = {"name": sample.name}
    if sample.labels is None:
        row.update({k: _json_value(v) for k, v in scores[0].items()})
        row.update(ans.extras[0])
        return row
    for key in scores[0]:
        row[key] = _json_value(metrics.nanmean(s[key] for s in scores)[0])
    for key in ans.extras[0]:
        row[key] = metrics.nanmean(e.get(key) for e in ans.extras)[0]
    row["n_labels"] = len(ans.labels)
    for k, s in zip(ans.labels, scores, strict=True):
        row.update({metrics.label_column(k, m): _json_value(v) for m, v in s.items()})
    return row


def per_label(per_image: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per label, over the images that hold it: {"n_images", "mean", "n_undefined"}. A binary mask
    in a multi-label dataset is its label 1 (a label map holding only label 1 reads as one)."""
    split = [_label_columns(row) for row in per_image]
    scored = {m for parts in split for scores in parts.values() for m in scores}
    found: dict[int, list[dict[str, Any]]] = {}
    for row, parts in zip(per_image, split, strict=True):
        for k, scores in (parts or {1: {m: row[m] for m in scored if m in row}}).items():
            found.setdefault(k, []).append(scores)
    out = {}
    for k in sorted(found):
        mean, undefined = _summary(found[k])
        out[str(k)] = {"n_images": len(found[k]), "mean": mean, "n_undefined": undefined}
    return out


def _label_columns(row: dict[str, Any]) -> dict[int, dict[str, Any]]:
    """{label: {metric: value}} from a row's label<K>_<metric> columns."""
    parts: dict[int, dict[str, Any]] = {}
    for key, value in row.items():
        if (split := metrics.split_label_column(key)) is not None:
            parts.setdefault(int(split[0]), {})[split[1]] = value
    return parts


def _json_value(value: Any) -> Any:
    """NaN is not JSON: undefined metrics are written as null."""
    return None if isinstance(value, float) and math.isnan(value) else value


def _summary(per_image: list[dict[str, Any]]) -> tuple[dict[str, float | None], dict[str, int]]:
    first = per_image[0] if per_image else {}
    keys = [k for k in first if k not in NOT_AVERAGED and metrics.split_label_column(k) is None]
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
    min_area: int = MIN_AREA,
    jitter_seed: int | None = None,
    *,
    tolerance_px: float = metrics.NSD_TOLERANCE_PX,
    tolerance_mm: float = metrics.NSD_TOLERANCE_MM,
    label: str | None = None,
    save_predictions: str | Path | None = None,
    settings: dict[str, Any] | None = None,
    progress: bool = True,
    prompt: str = "box",
) -> dict[str, Any]:
    """Score a model, or a folder of saved predictions, on every readable sample of `dataset`.

    Models get box prompts from the ground truth (`Prompting`), or with `prompt` points and
    simulated clicks (`kdsam.eval.interactive`), and predict at the original image size. Samples
    with an empty ground truth, unreadable files and missing predictions are listed in "skipped"
    with the reason, never silently dropped.

    Arguments:
      model_or_predictions (KDSam, KDSamPredictor, OnnxPredictor, Segmenter, str or Path): what to
        score; a string is a MODEL (`kdsam.models.spec`) or else a folder of NAME.png predictions.
      dataset (Dataset): the samples, each an HxWx3 uint8 image and an HxW ground-truth mask.
      box_mode (str): how boxes come from a mask (`kdsam.data.prompts.boxes_from_mask`): one box
        per connected component ("components") or one around every object ("all").
      min_area (int): components smaller than this many pixels get no box (the largest always does).
      jitter_seed (int or None): jitter the boxes, seeded per sample name (None: exact boxes).
      tolerance_px, tolerance_mm (float): the NSD tolerance in pixels, or in mm for samples with
        a pixel spacing.
      label (str or None): the model's name in the result (None: from the model or folder).
      save_predictions (str, Path or None): also write each predicted mask as NAME.png there.
      settings (dict or None): recorded as the result's "settings".
      progress (bool): show a progress bar.
      prompt (str): "box", "point", "clicks:N" or "box+clicks:N" (`kdsam.eval.interactive`).

    Returns:
      (dict): the metrics.json dict (schema in the module docstring): per-image dice, iou, hd95
        and nsd, their means, the undefined counts and the skipped samples.

    Raises:
      KdsamError: a MODEL or predictions folder that cannot be loaded, or a `prompt` that cannot
        be parsed or needs a model where saved predictions were given.
    """
    segmenter = with_protocol(as_segmenter(model_or_predictions, label), prompt, min_area)
    protocol = parse_prompt(prompt)
    prompting = Prompting(box_mode, min_area, jitter_seed)
    known_problems = len(dataset.problems)
    per_image: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    multi_label = False
    samples = tqdm(
        dataset.samples(), total=len(dataset), desc=f"evaluate {segmenter.label}", unit="img", disable=not progress
    )
    for sample in samples:
        if not sample.mask.any():
            skipped.append({"name": sample.name, "reason": EMPTY_TRUTH, "kind": "empty_truth"})
            continue
        try:
            ans = answer(segmenter, sample, prompting)
        except SkipSample as err:
            skipped.append({"name": sample.name, "reason": str(err), "kind": err.kind})
            continue
        multi_label = multi_label or sample.labels is not None
        if save_predictions is not None:
            write_png(Path(save_predictions) / f"{sample.name}.png", ans.prediction(sample.labels is not None))
        row = _row(sample, ans, tolerance_px, tolerance_mm)
        row.update({k: sample.meta[k] for k in ROW_META if k in sample.meta})
        if segmenter.prompted:
            row["n_boxes"] = len(ans.all_boxes)
        per_image.append(row)
    skipped += [
        {"name": p["name"], "reason": p["error"], "kind": "unreadable"} for p in dataset.problems[known_problems:]
    ]
    mean, undefined = _summary(per_image)
    missing = [s["name"] for s in skipped if s["kind"] in NOT_COVERED]
    return {
        "model": segmenter.label,
        "data": dataset.location,
        "split": dataset.split,
        "n_images": len(per_image),
        "mean": mean,
        "n_undefined": undefined,
        "per_image": per_image,
        **({"per_label": per_label(per_image)} if multi_label else {}),
        "n_skipped": len(skipped),
        "skipped": skipped,
        "coverage": {"n_scored": len(per_image), "n_expected": len(per_image) + len(missing), "missing": missing},
        "box_mode": box_mode if segmenter.prompted else None,
        "settings": {
            "prompts": "none (saved predictions)" if not segmenter.prompted else protocol.description,
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
        ans = answer(segmenter, sample, prompting)
        rows.append(
            [
                draw_boxes(sample.image, ans.all_boxes),
                overlay(sample.image, sample.mask, TRUTH_COLOR),
                overlay(sample.image, ans.prediction(False), PRED_COLOR),
            ]
        )
        titles.append(title)
    return grid(rows, path, row_titles=titles, col_titles=["image + prompts", "ground truth", "prediction"])


def check_writable(out_dir: str | Path, overwrite: bool) -> None:
    """Refuse to replace an earlier evaluation unless asked (before any work is done)."""
    target = Path(out_dir) / METRICS_FILE
    if target.exists() and not overwrite:
        raise KdsamError(f"{target} exists: pass --overwrite to replace it, or choose another --out")


def check_coverage(result: dict[str, Any], allow_missing: bool = False) -> None:
    """Refuse a result that scored nothing, or (unless allowed) a mean over only the images a
    source happened to cover: it would not be comparable with a mean over all of them."""
    cov, where = result["coverage"], f"{result['data']} ({result['split'] or 'all splits'})"
    missing = cov["missing"]
    listed = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    if cov["n_scored"] == 0:
        expected = f"; expected <sample name>.png files, e.g. {missing[0]}.png" if missing else ""
        raise KdsamError(f"{result['model']}: no image of {where} could be scored{expected}")
    if missing and not allow_missing:
        raise KdsamError(
            f"{result['model']}: predictions for {cov['n_scored']} of {cov['n_expected']} images of {where} "
            f"(missing or unusable: {listed}); a mean over a subset is refused: add them, choose --split, "
            "or pass --allow-missing"
        )


def run_evaluation(
    source: Source,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    allow_missing: bool = False,
    label: str | None = None,
    box_mode: str = "components",
    min_area: int = MIN_AREA,
    jitter_seed: int | None = None,
    figure: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """evaluate() and write OUT/metrics.json (atomic), OUT/per_image.csv and OUT/cases.png; nothing
    is written for a result `check_coverage` refuses. `options` are evaluate()'s other keyword
    arguments (tolerances, settings, progress, ...)."""
    out_dir = Path(out_dir)
    check_writable(out_dir, overwrite)
    segmenter = with_protocol(as_segmenter(source, label), options.get("prompt", "box"), min_area)
    result = evaluate(segmenter, dataset, box_mode, min_area, jitter_seed, **options)
    check_coverage(result, allow_missing)
    write_json(out_dir / METRICS_FILE, result)
    write_text(out_dir / PER_IMAGE_FILE, per_image_csv(result))
    if figure:
        write_cases(result, dataset, segmenter, Prompting(box_mode, min_area, jitter_seed), out_dir / CASES_FILE)
    return result
