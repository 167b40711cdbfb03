"""Mixed prompts for stage 2: boxes, points, box plus points, and simulated corrective clicks.

SAM was trained interactively: a first prompt (a box or a foreground point), then further points
taken from the error region of its previous prediction, with the previous low-resolution logits fed
back as the mask prompt. A decoder fine-tuned on boxes alone forgets how to answer a click (the
bundled LiteMedSAM, trained on boxes, returns almost nothing for a point). This module draws such
prompt sequences for one object in the low-resolution (256x256) frame the loss is computed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import torch

from kdsam.data.clicks import next_click
from kdsam.errors import KdsamError
from kdsam.models.sam import KDSam

KINDS = ("box", "point", "box+point")
DEFAULT_MIX = "box=0.5,point=0.25,box+point=0.25"


@dataclass(frozen=True)
class PromptMix:
    """Probabilities of each first prompt, and the most corrective clicks added after it.

    Each training object draws its first prompt from `weights`, then 0..max_clicks corrective clicks
    (uniformly); the clicks are simulated without gradient and the loss is taken on the answer to the
    full sequence, so the decoder learns both first answers and corrections.
    """

    weights: tuple[tuple[str, float], ...]
    max_clicks: int = 2

    @property
    def boxes_only(self) -> bool:
        return dict(self.weights) == {"box": 1.0} and self.max_clicks == 0

    @property
    def prompts(self) -> tuple[str, ...]:
        """What a decoder fine-tuned on this mix answers: ("box",), or ("box", "point") once clicks
        are drawn, first or corrective (the card records it, so servers can say so)."""
        kinds = {kind for kind, weight in self.weights if weight}
        return ("box",) if kinds <= {"box"} and not self.max_clicks else ("box", "point")

    def describe(self) -> dict[str, object]:
        return {"first_prompt": dict(self.weights), "max_corrective_clicks": self.max_clicks}

    def draw(self, target: np.ndarray, rng: np.random.Generator) -> PromptPlan:
        """One object's prompt sequence: the kind of its first prompt, its corrective clicks, and the
        positive point of a point-led prompt (drawn uniformly inside the low-res target)."""
        kinds, probs = zip(*self.weights, strict=True)
        kind = kinds[int(rng.choice(len(kinds), p=np.asarray(probs) / sum(probs)))]
        clicks = int(rng.integers(self.max_clicks + 1))
        return PromptPlan(KINDS.index(kind), clicks, random_point(target, rng))


@dataclass(frozen=True)
class PromptPlan:
    """kind: index into KINDS; clicks: corrective clicks after it; point: (x, y) in the low-res frame."""

    kind: int
    clicks: int
    point: tuple[int, int]


def parse_mix(text: str, max_clicks: int = 2) -> PromptMix:
    """`box=0.5,point=0.25,box+point=0.25` (weights normalised), or `box` for the boxes-only recipe."""
    if text == "box":
        return PromptMix((("box", 1.0),), 0)
    weights = []
    for part in text.split(","):
        match = re.fullmatch(r"\s*(box|point|box\+point)\s*=\s*([0-9.]+)\s*", part)
        if not match:
            raise KdsamError(f"--prompt-mix {text!r}: use KIND=WEIGHT,... with KIND in {', '.join(KINDS)}")
        weights.append((match.group(1), float(match.group(2))))
    if sum(w for _, w in weights) <= 0 or max_clicks < 0:
        raise KdsamError(f"--prompt-mix {text!r}: weights must add up to more than 0, and clicks be >= 0")
    return PromptMix(tuple(weights), max_clicks)


def random_point(target: np.ndarray, rng: np.random.Generator) -> tuple[int, int]:
    """(x, y) of a pixel of the object drawn uniformly, as SAM samples its first point."""
    ys, xs = np.nonzero(target)
    i = int(rng.integers(len(xs)))
    return int(xs[i]), int(ys[i])


@dataclass
class _Prompts:
    """One object's prompts so far: its box (prompt frame) or None, its points (low-res frame), the
    previous answer fed back as the mask prompt, and the corrective clicks still to simulate."""

    item: int
    box: torch.Tensor | None
    points: list[tuple[int, int, bool]]
    mask: torch.Tensor | None
    clicks_left: int

    @classmethod
    def first(cls, item: int, plan: PromptPlan, box: torch.Tensor) -> _Prompts:
        kind = KINDS[plan.kind]
        points = [] if kind == "box" else [(*plan.point, True)]
        return cls(item, box if kind != "point" else None, points, None, plan.clicks)

    def shape(self) -> tuple[bool, int, bool]:
        """Prompts of one shape encode to tensors of one shape, so such objects decode together."""
        return self.box is not None, len(self.points), self.mask is not None


def _decode_alike(
    model: KDSam, embeddings: torch.Tensor, prompts: list[_Prompts], scale: float, batched: bool | None
) -> torch.Tensor:
    """Gx1x256x256 logits of G objects whose prompts have the same shape, in one decoder pass."""
    first, device = prompts[0], embeddings.device
    point_prompt = None
    if first.points:
        # centre of low-res pixel (x, y) as a prompt-frame pixel index (the prompt encoder adds 0.5 itself)
        coords = [[((x + 0.5) * scale - 0.5, (y + 0.5) * scale - 0.5) for x, y, _ in p.points] for p in prompts]
        labels = [[int(positive) for _, _, positive in p.points] for p in prompts]
        point_prompt = (torch.tensor(coords, device=device), torch.tensor(labels, device=device))
    boxes = torch.stack([p.box for p in prompts]) if first.box is not None else None
    masks = torch.stack([p.mask for p in prompts]) if first.mask is not None else None
    sparse, dense = model.prompt_encoder(points=point_prompt, boxes=boxes, masks=masks)
    items = [p.item for p in prompts]
    return model.decode_prompts(embeddings[items], sparse, dense, batched=batched)[0]


def _decode_grouped(
    model: KDSam, embeddings: torch.Tensor, prompts: list[_Prompts], scale: float, batched: bool | None
) -> list[torch.Tensor]:
    """Each object's 1x256x256 logits; objects with prompts of the same shape share a decoder pass."""
    groups: dict[tuple[bool, int, bool], list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(p.shape(), []).append(i)
    answers: list[torch.Tensor] = [torch.empty(0)] * len(prompts)
    for members in groups.values():
        logits = _decode_alike(model, embeddings, [prompts[i] for i in members], scale, batched)
        for i, answer in zip(members, logits, strict=True):
            answers[i] = answer
    return answers


def prompted_logits(
    model: KDSam,
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    boxes: torch.Tensor,
    plans: list[PromptPlan],
    batched: bool | None = None,
) -> torch.Tensor:
    """Logits (Bx1x256x256, with gradient) for B objects, each under its drawn prompt sequence.

    embeddings: Bx256x64x64; targets: Bx1x256x256 float in the low-res frame; boxes: Bx4 in the prompt
    frame (already jittered). Corrective clicks go to the deepest point of the largest error region of
    the previous answer (`kdsam.data.clicks.next_click`), which is fed back as the mask prompt. The
    sequences advance together, a round at a time, and the objects whose prompts have the same shape
    decode in one pass (`batched` as in `KDSam.decode_prompts`): a few decoder passes per round
    instead of one per object, and one transfer of the answers to the CPU for the clicks.
    """
    truths = (targets[:, 0] > 0.5).cpu().numpy()
    scale = model.img_size / targets.shape[-1]
    prompts = [_Prompts.first(i, plan, boxes[i]) for i, plan in enumerate(plans)]
    while active := [p for p in prompts if p.clicks_left > 0]:
        with torch.no_grad():
            answers = _decode_grouped(model, embeddings, active, scale, batched)
        predictions = (torch.stack(answers)[:, 0] > 0).cpu().numpy()
        for p, answer, prediction in zip(active, answers, predictions, strict=True):
            click = next_click(prediction, truths[p.item])
            if click is None:  # the answer is already right: no more clicks for this object
                p.clicks_left = 0
                continue
            p.points.append((click.x, click.y, click.positive))
            p.mask = answer
            p.clicks_left -= 1
    return torch.stack(_decode_grouped(model, embeddings, prompts, scale, batched))
