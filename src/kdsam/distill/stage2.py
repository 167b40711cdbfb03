"""Stage 2: the student's mask decoder is fine-tuned on ground-truth masks from box prompts."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from kdsam.data.dataset import Dataset
from kdsam.distill.items import Item, make_items, pick_parts, prompt_boxes
from kdsam.distill.losses import soft_dice_loss
from kdsam.distill.run import RunDir
from kdsam.distill.trainer import FitConfig, fit, seed_everything
from kdsam.errors import KdsamError
from kdsam.models.loading import load_saved_student, save_model
from kdsam.models.sam import KDSam

log = logging.getLogger("kdsam")


@torch.no_grad()
def embed_items(student: KDSam, items: Sequence[Item], batch: int = 8) -> torch.Tensor:
    """With the encoder frozen, each image's embedding is fixed: compute it once, not every epoch."""
    student.image_encoder.eval()
    out = [
        student.image_encoder(torch.stack([it.student_input for it in items[i : i + batch]]).float())
        for i in range(0, len(items), batch)
    ]
    return torch.cat(out) if out else torch.zeros(0, 256, 64, 64)


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
) -> KDSam:
    """Fine-tune the mask decoder of RUN's student with a Dice loss (+ optional BCE); box prompts from
    the masks, jittered in training only. The encoder stays frozen unless `train_encoder`."""
    cfg = cfg or FitConfig(epochs=10, lr=1e-4)
    run = RunDir(run_dir)
    run.read_config()
    source = run.path / "model-distill.pt"
    student = load_saved_student(source if source.is_file() else run.model)
    run.start("finetune", resume)
    if splits is not None:
        run.write_split("finetune", train.spec, splits)
    seed_everything(cfg.seed)
    train_items, val_items = make_items(train, student), make_items(val, student)
    if not val_items:
        raise KdsamError(
            f"{val.spec}: the validation split has no usable image; model selection needs one (see --split-file)"
        )
    student.requires_grad_(False)
    trainable = (
        student.mask_decoder
        if not train_encoder
        else torch.nn.ModuleList([student.mask_decoder, student.image_encoder])
    )
    trainable.requires_grad_(True)
    frozen_embs = None if train_encoder else embed_items(student, train_items)
    val_embs = embed_items(student, val_items)
    index = {id(item): i for i, item in enumerate(train_items)}
    run.write_config(
        "finetune",
        {
            "loss": "dice" + (f" + {bce_weight} x bce" if bce_weight else ""),
            "train_encoder": train_encoder,
            "train": {"spec": train.spec, "split": train.split, "n": len(train_items)},
            "val": {"spec": val.spec, "split": val.split, "n": len(val_items)},
            "fit": asdict(cfg),
        },
    )

    def loss_of(emb: torch.Tensor, batch: Sequence[Item], rng: np.random.Generator, jitter: bool):
        parts = pick_parts(batch, rng)
        boxes = prompt_boxes(batch, parts, student, rng if jitter else None)
        target = torch.stack([p.target for p in parts])
        logits, _ = student.decode(emb, boxes)
        dice = soft_dice_loss(logits, target)
        bce = F.binary_cross_entropy_with_logits(logits, target) if bce_weight else torch.zeros(())
        return dice, bce

    def step(batch: Sequence[Item], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        if frozen_embs is None:
            emb = student.image_encoder(torch.stack([it.student_input for it in batch]).float())
        else:
            emb = frozen_embs[[index[id(it)] for it in batch]]
        dice, bce = loss_of(emb, batch, rng, jitter=True)
        return {"dice_loss": dice, "bce": bce, "loss": dice + bce_weight * bce}

    def validate() -> dict[str, float]:
        embs = embed_items(student, val_items) if train_encoder else val_embs
        rng = np.random.default_rng(cfg.seed)  # the same boxes every epoch
        dice, _ = loss_of(embs, val_items, rng, jitter=False)
        return {"val_dice": 1 - float(dice), "val_loss": float(dice)}

    fit(run, "finetune", student, trainable, train_items, step, validate, cfg, resume)
    save_model(student, run.model)
    run.finish("finetune")
    return student
