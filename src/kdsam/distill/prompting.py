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


def decode_prompts(
    model: KDSam,
    embedding: torch.Tensor,
    box: torch.Tensor | None,
    points: list[tuple[int, int, bool]],
    mask_input: torch.Tensor | None,
    low_res_to_frame: float,
) -> torch.Tensor:
    """One object's 1x1x256x256 mask logits for a box (1x4, prompt frame) and/or points given in
    the low-res frame, scaled to the prompt frame by `low_res_to_frame`."""
    point_prompt = None
    if points:
        # centre of low-res pixel (x, y) as a prompt-frame pixel index (the prompt encoder adds 0.5 itself)
        centre = [((x + 0.5) * low_res_to_frame - 0.5, (y + 0.5) * low_res_to_frame - 0.5) for x, y, _ in points]
        coords = torch.tensor(centre)
        labels = torch.tensor([int(positive) for _, _, positive in points])
        point_prompt = (coords[None].to(embedding.device), labels[None].to(embedding.device))
    sparse, dense = model.prompt_encoder(points=point_prompt, boxes=box, masks=mask_input)
    logits, _ = model.mask_decoder(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return logits


def prompted_logits(
    model: KDSam, embedding: torch.Tensor, target: torch.Tensor, box: torch.Tensor, plan: PromptPlan
) -> torch.Tensor:
    """Logits (1x1x256x256, with gradient) for one object under a drawn prompt sequence.

    embedding: 1x256x64x64; target: 1x256x256 float in the low-res frame; box: 1x4 in the prompt
    frame (already jittered). Corrective clicks go to the deepest point of the largest error region of
    the previous answer (`kdsam.data.clicks.next_click`), which is fed back as the mask prompt.
    """
    kind = KINDS[plan.kind]
    truth = target[0].detach().cpu().numpy() > 0.5
    scale = model.img_size / truth.shape[-1]
    points: list[tuple[int, int, bool]] = [] if kind == "box" else [(*plan.point, True)]
    use_box = box if kind != "point" else None
    mask_input = None
    for _ in range(plan.clicks):
        with torch.no_grad():
            logits = decode_prompts(model, embedding, use_box, points, mask_input, scale)
        click = next_click(logits[0, 0].float().cpu().numpy() > 0, truth)  # bf16 under CUDA autocast
        if click is None:
            break
        points.append((click.x, click.y, click.positive))
        mask_input = logits.detach()
    return decode_prompts(model, embedding, use_box, points, mask_input, scale)
