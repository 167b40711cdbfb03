"""Stage 2: the student's mask decoder is fine-tuned on ground-truth masks from box prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import open_cache
from kdsam.distill.items import AUGMENTATIONS, TrainingSet
from kdsam.distill.losses import dice_loss_per_item
from kdsam.distill.process import TrainingProcess
from kdsam.distill.prompting import DEFAULT_MIX, PromptMix, PromptPlan, parse_mix, prompted_logits
from kdsam.distill.run import RunDir
from kdsam.distill.stage import Stage, default_fit
from kdsam.distill.trainer import Batch, FitConfig
from kdsam.errors import KdsamError
from kdsam.models.loading import load_saved_student
from kdsam.models.sam import KDSam

log = logging.getLogger("kdsam")


def finetune(
    run_dir: str | Path,
    train: Dataset,
    val: Dataset,
    *,
    bce_weight: float = 0.0,
    train_encoder: bool = False,
    cfg: FitConfig | None = None,
    resume: bool = False,
    splits: dict[str, list[str]] | None = None,
    process: TrainingProcess | None = None,
    augmentations: Sequence[str] = (),
    cache_dir: str | Path | None = None,
    prompt_mix: PromptMix | None = None,
) -> KDSam:
    """Fine-tune the mask decoder of RUN's student with a Dice loss (+ optional BCE); box prompts from
    the masks, jittered in training only. The encoder stays frozen unless `train_encoder`; then each
    image's embedding is fixed, so it is computed once into the cache (keyed by the student's
    weights) and streamed back, unless augmentations change the pixels every epoch.

    `prompt_mix` (default: `kdsam.distill.prompting.DEFAULT_MIX`) trains on boxes, points, box plus
    points and simulated corrective clicks; validation, and so model selection, stays on boxes."""
    cfg = cfg or default_fit("finetune")
    process = process or TrainingProcess(torch.device("cpu"))
    unknown = set(augmentations) - set(AUGMENTATIONS)
    if unknown:
        raise KdsamError(f"--augment {','.join(sorted(unknown))}: unknown; choose from {', '.join(AUGMENTATIONS)}")
    run = RunDir(run_dir)
    run.read_config()
    source = run.path / "model-distill.pt"
    student = load_saved_student(source if source.is_file() else run.model)
    mix = prompt_mix or parse_mix(DEFAULT_MIX)
    student.card["prompts"] = list(mix.prompts)
    options = {
        "bce_weight": bce_weight,
        "train_encoder": train_encoder,
        "augment": sorted(augmentations),
        "prompts": mix.describe(),
    }
    stage = Stage.begin("finetune", run, train, val, options, cfg=cfg, process=process, resume=resume, splits=splits)
    student.to(process.device)
    student.requires_grad_(False)
    student.image_encoder.eval()
    frozen = None if train_encoder else open_cache(student, cache_dir, process)
    train_index, val_index = stage.index(None if augmentations else frozen, frozen)
    trainable = (
        student.mask_decoder
        if not train_encoder
        else torch.nn.ModuleList([student.mask_decoder, student.image_encoder])
    )
    trainable.requires_grad_(True)
    frozen_dir = frozen.dir if frozen is not None else None
    train_set = TrainingSet(train, train_index, student, seed=cfg.seed, frozen_cache=frozen_dir, jitter=True,
                            augmentations=augmentations, prompt_mix=None if mix.boxes_only else mix)  # fmt: skip
    val_set = TrainingSet(val, val_index, student, seed=cfg.seed, frozen_cache=frozen_dir)
    head = {
        "loss": "dice" + (f" + {bce_weight} x bce" if bce_weight else ""),
        "options": stage.options,
        "train_encoder": train_encoder,
        "augment": sorted(augmentations),
        "prompts": {**mix.describe(), "validation": "boxes (model selection on box Dice)"},
    }
    stage.write_config(head, frozen_dir)

    def embeddings(batch: Batch) -> torch.Tensor:
        if "emb" in batch:
            return batch["emb"].float()
        if train_encoder:
            return student.image_encoder(batch["x"])
        with torch.no_grad():  # frozen encoder, augmented pixels
            return student.image_encoder(batch["x"])

    def prompted(batch: Batch) -> torch.Tensor:
        """Box prompts for the whole batch at once, or each item's drawn prompt sequence."""
        emb = embeddings(batch)
        if "prompt_kind" not in batch:
            return student.decode(emb, batch["box"])[0]
        plans = [
            PromptPlan(int(kind), int(clicks), (int(point[0]), int(point[1])))
            for kind, clicks, point in zip(
                batch["prompt_kind"], batch["prompt_clicks"], batch["prompt_point"], strict=True
            )
        ]
        return prompted_logits(student, emb, batch["target"], batch["box"], plans)

    def losses(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        logits = prompted(batch)
        dice = dice_loss_per_item(logits, batch["target"])
        bce = F.binary_cross_entropy_with_logits(logits.float(), batch["target"]) if bce_weight else torch.zeros(())
        return dice, bce

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        dice, bce = losses(batch)
        dice = dice.mean()
        return {"dice_loss": dice, "bce": bce, "loss": dice + bce_weight * bce}

    def val_step(batch: Batch) -> dict[str, float]:
        dice = losses(batch)[0]
        return {"val_dice": float((1 - dice).sum()), "val_loss": float(dice.sum())}

    stage.fit_and_save(student, trainable, train_set, val_set, step, val_step)
    return student
