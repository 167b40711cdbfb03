"""The CVPR 2025 interactive 3D protocol (CVPR25_iter_eval.py), run in-process on labelled volumes.

Per case: step 0 is the 3D box of every class (a case without boxes scores 0 there and starts from
clicks); then 5 steps, each adding at most one click per class: in the largest 26-connected
component of that class's error (prediction != truth), at a voxel where the Euclidean distance
transform of the component (the volume border counting as boundary) is largest, one of them drawn
uniformly with numpy's seed 42 reset each time; an object click where the truth is the class, else
a background click. Each step is scored: DSC as the mean over the truth's labels; NSD at 2 mm with
the case's spacing (kdsam.eval.challenge), 0 when that DSC is at most 0.2. DSC_AUC and NSD_AUC are
the trapezoid over the 5 click steps at unit spacing (0 to 4), as sklearn's auc there; _Final is
the last step's. Classes are the truth's labels in increasing order; class i of the prompt lists
is answered as label i + 1 and mapped back to the truth's label before scoring.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from kdsam.eval import challenge
from kdsam.infer.cvpr25 import BOX_KEYS, parse_case
from kdsam.infer.interactive3d import case_embeddings, segment_case25

CLICKS = 5
SEED = 42
CONNECTIVITY = np.ones((3, 3, 3), bool)  # 26-connected, as cc3d.connected_components(connectivity=26)


def truth_boxes(gts: np.ndarray, labels: list[int]) -> list[dict[str, int]]:
    """The challenge's box of each label: its z range, and on z_mid (the slice where the label is
    largest, the first such) the 2D bounding box, inclusive pixel indices."""
    boxes = []
    for label in labels:
        obj = gts == label
        areas = obj.reshape(obj.shape[0], -1).sum(axis=1)
        zs = np.nonzero(areas)[0]
        z_mid = int(np.argmax(areas))
        ys, xs = np.nonzero(obj[z_mid])
        values = (zs.min(), zs.max(), z_mid, xs.min(), ys.min(), xs.max(), ys.max())
        boxes.append(dict(zip(BOX_KEYS, (int(v) for v in values), strict=True)))
    return boxes


def next_click(pred: np.ndarray, truth: np.ndarray) -> tuple[tuple[int, int, int], bool] | None:
    """((z, y, x), object?) of the simulated click for one class, None when there is no error."""
    error = pred != truth
    if not error.any():
        return None
    components, _ = ndimage.label(error, structure=CONNECTIVITY)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    distance = ndimage.distance_transform_edt(np.pad(largest, 1))[1:-1, 1:-1, 1:-1]
    candidates = np.argwhere(distance == distance.max())
    voxel = tuple(int(v) for v in candidates[np.random.RandomState(SEED).choice(len(candidates))])
    return voxel, bool(truth[voxel])


def add_clicks(segs: np.ndarray, gts: np.ndarray, labels: list[int], clicks: list[dict], order: list[list]) -> None:
    """One step's clicks, appended in place: for class i (truth label labels[i]) a click in `clicks[i]`
    ("fg" or "bg") and its kind in `order[i]`, or None there when the class is already perfect."""
    for i, label in enumerate(labels):
        click = next_click(segs == label, gts == label)
        if click is not None:
            clicks[i]["fg" if click[1] else "bg"].append(list(click[0]))
        order[i].append(None if click is None else ("fg" if click[1] else "bg"))


def object_array(items: list[Any]) -> np.ndarray:
    """A list as the challenge's npz hands it back (a 1D object array), so `parse_case` reads it."""
    out = np.empty(len(items), dtype=object)
    out[:] = items
    return out


def step_scores(segs: np.ndarray, gts: np.ndarray, spacing: list[float], labels: list[int]) -> tuple[float, float]:
    """(DSC, NSD) of one step, as the official script scores it."""
    dsc = float(np.mean([challenge.class_dsc(segs == i, gts == i) for i in labels]))
    if not dsc > challenge.NSD_MIN_DSC:
        return dsc, 0.0
    return dsc, float(np.mean([challenge.class_nsd(segs == i, gts == i, spacing) for i in labels]))


def auc(values: list[float]) -> float:
    """Trapezoid at unit spacing (sklearn.metrics.auc(np.arange(n), values))."""
    return float(np.trapezoid(values)) if hasattr(np, "trapezoid") else float(np.trapz(values))


@dataclass
class VolumeCase:
    """A labelled case: (D, H, W) uint8 image, (D, H, W) integer truth, spacing along (D, H, W),
    and its CVPR25 boxes when it came with them (else they are made from the truth)."""

    name: str
    imgs: np.ndarray
    gts: np.ndarray
    spacing: list[float]
    boxes: list[dict[str, Any]] | None = None


def run_case(model: Any, case: VolumeCase, use_boxes: bool = True) -> dict[str, Any]:
    """The protocol on one case: per step DSC, NSD and seconds, the clicks, and the summary values."""
    labels = [int(v) for v in np.unique(case.gts) if v != 0]
    lut = np.zeros(len(labels) + 2, case.gts.dtype)
    lut[1 : len(labels) + 1] = labels
    boxes = (case.boxes or truth_boxes(case.gts, labels)) if use_boxes else None
    embeddings = case_embeddings(model, case.imgs, None)  # kept in memory across the six steps
    clicks = [{"fg": [], "bg": []} for _ in labels]
    order: list[list[str | None]] = [[] for _ in labels]
    segs = np.zeros_like(case.gts)
    answer = np.zeros(case.imgs.shape[:3], np.uint8)  # what the previous step wrote (label i + 1)
    steps = []
    for step in range(CLICKS + 1):
        data: dict[str, Any] = {"imgs": case.imgs, "spacing": np.asarray(case.spacing)}
        if boxes is not None:
            data["boxes"] = object_array(boxes)
        if step == 0 and boxes is None:
            steps.append({"dsc": 0.0, "nsd": 0.0, "seconds": 0.0})  # the official script's no-box first step
            continue
        if step > 0:
            add_clicks(segs, case.gts, labels, clicks, order)
            data |= {"clicks": object_array(clicks), "clicks_order": object_array(order), "prev_pred": answer}
        start = time.perf_counter()
        answer = segment_case25(embeddings, parse_case(Path(case.name), data))
        seconds = time.perf_counter() - start
        segs = lut[np.minimum(answer, len(labels) + 1)]
        dsc, nsd = step_scores(segs, case.gts, case.spacing, labels)
        steps.append({"dsc": dsc, "nsd": nsd, "seconds": seconds})
    dscs, nsds = [s["dsc"] for s in steps], [s["nsd"] for s in steps]
    return {
        "name": case.name,
        "classes": len(labels),
        "steps": steps,
        "clicks": clicks,
        "clicks_order": order,
        "DSC_AUC": auc(dscs[1:]),
        "NSD_AUC": auc(nsds[1:]),
        "DSC_Final": dscs[-1],
        "NSD_Final": nsds[-1],
        "seconds_per_step": float(np.mean([s["seconds"] for s in steps if s["seconds"] > 0])),
    }
