"""Prompts beyond a box at evaluation time: one point, simulated clicks, a box plus clicks.

`--prompt` grammar: `box` (default; one box per object), `point` (one positive click per object),
`clicks:N` (N clicks per object: the first at its deepest interior point, then corrective clicks)
and `box+clicks:N` (the box, then N corrective clicks). Clicks follow `kdsam.data.clicks`; after
the first prompt the previous low-resolution logits are fed back as SAM's mask prompt, as SAM was
trained. Per image this adds Dice after each prompt step (`dice@0` is the box alone, `dice@k`
after k clicks) and NoC@85 / NoC@90: the clicks an object needs to reach IoU 0.85 / 0.90, at most
`max_clicks` (N), counted as N when never reached (the standard convention, with N = 20).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from kdsam.data.clicks import Click, as_point_prompt, first_click, next_click
from kdsam.data.prompts import MIN_AREA, box_around, components
from kdsam.errors import KdsamError
from kdsam.eval import metrics
from kdsam.infer.prompts import decode_object
from kdsam.predictor import KDSamPredictor

NOC_THRESHOLDS = (0.85, 0.90)
DEFAULT_CLICKS = 20


@dataclass(frozen=True)
class PromptProtocol:
    """A parsed `--prompt`: whether a box starts it and how many clicks follow."""

    box: bool
    clicks: int

    @property
    def name(self) -> str:
        if not self.clicks:
            return "box"
        if self.box:
            return f"box+clicks:{self.clicks}"
        return "point" if self.clicks == 1 else f"clicks:{self.clicks}"

    @property
    def description(self) -> str:
        if not self.clicks:
            return "boxes from the ground truth"
        return f"{self.name}: simulated clicks (kdsam.data.clicks), previous logits fed back as mask prompt"

    @property
    def interactive(self) -> bool:
        return self.clicks > 0


def parse_prompt(text: str) -> PromptProtocol:
    """`box` | `point` | `clicks[:N]` | `box+clicks[:N]` (N >= 1, default 20)."""
    if text == "box":
        return PromptProtocol(True, 0)
    if text == "point":
        return PromptProtocol(False, 1)
    match = re.fullmatch(r"(box\+)?clicks(?::(\d+))?", text)
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        raise KdsamError(f"--prompt {text!r}: use box, point, clicks:N or box+clicks:N (N >= 1)")
    n = int(match.group(2)) if match.group(2) else DEFAULT_CLICKS
    return PromptProtocol(bool(match.group(1)), n)


def _noc(ious: list[float], threshold: float, max_clicks: int, clicks_at_first_step: int) -> int:
    """Clicks until IoU >= threshold, else max_clicks. Step k of the protocol has had
    k + clicks_at_first_step clicks (0 at a box-only first step, 1 at a first click)."""
    for step, value in enumerate(ious):
        if value >= threshold:
            return step + clicks_at_first_step
    return max_clicks


def segment_object(
    predictor: KDSamPredictor, truth: np.ndarray, protocol: PromptProtocol
) -> tuple[list[np.ndarray], list[float]]:
    """Run the protocol on one object of the image set in `predictor`.

    Returns the predicted mask after each step (the box alone counts as step 0 when the protocol
    has a box) and its IoU with `truth`.
    """
    box = box_around(truth) if protocol.box else None
    clicks: list[Click] = []
    logits: np.ndarray | None = None
    masks: list[np.ndarray] = []
    steps = protocol.clicks + int(protocol.box)
    pred = np.zeros_like(truth)
    for step in range(steps):
        if step > 0 or not protocol.box:
            click = first_click(truth) if step == 0 else next_click(pred, truth)
            if click is None:  # perfect already: further clicks change nothing
                masks.append(pred)
                continue
            clicks.append(click)
        coords, labels = as_point_prompt(clicks)
        pred, _, logits = decode_object(predictor, coords, labels, box, logits)
        masks.append(pred)
    return masks, [metrics.iou(m, truth) for m in masks]


def interactive_scores(
    predictor: KDSamPredictor, truth: np.ndarray, protocol: PromptProtocol, min_area: int = MIN_AREA
) -> tuple[np.ndarray, dict[str, Any]]:
    """All objects of an image (set in `predictor`) through the protocol.

    Returns the final mask (the union over objects) and the row's extra scores: `dice@k` of the
    union after step k, and the mean NoC@85 / NoC@90 over the image's objects.
    """
    objects = components(truth, min_area)
    runs = [segment_object(predictor, obj, protocol) for obj in objects]
    steps = len(runs[0][0])
    extras: dict[str, Any] = {}
    first = 0 if protocol.box else 1
    for step in range(steps):
        union = np.logical_or.reduce([masks[step] for masks, _ in runs])
        extras[f"dice@{step + first}"] = metrics.dice(union, truth)
    for threshold in NOC_THRESHOLDS:
        nocs = [_noc(ious, threshold, protocol.clicks, first) for _, ious in runs]
        extras[f"noc{round(threshold * 100)}"] = float(np.mean(nocs))
    final = np.logical_or.reduce([masks[-1] for masks, _ in runs])
    return final, extras
