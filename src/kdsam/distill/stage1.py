"""Stage 1: the student's encoder learns the teacher's embeddings (MSE + a perceptual term)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import TeacherCache
from kdsam.distill.items import Item, make_items, pick_parts, prompt_boxes
from kdsam.distill.losses import DecoderPerceptualLoss, embedding_mse
from kdsam.distill.run import RunDir
from kdsam.distill.trainer import FitConfig, fit, seed_everything
from kdsam.distill.vgg import VGGPerceptualLoss
from kdsam.errors import KdsamError
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student

log = logging.getLogger("kdsam")

PERCEPTUAL = ("decoder", "vgg16", "none")


def attach_teacher_logits(items: Sequence[Item], loss: DecoderPerceptualLoss, teacher: KDSam) -> None:
    """The teacher's mask logits for every training box, computed once (they never change)."""
    for item in tqdm(items, desc="teacher mask logits"):
        for part in item.parts:
            box = prompt_boxes([item], [part], teacher)
            part.teacher_logits = loss.teacher_logits(item.teacher_emb[None].float(), box)[0].to(torch.float16)


def teacher_embeddings(items: Sequence[Item]) -> torch.Tensor:
    """Bx256x64x64 float32 teacher embeddings of a batch of items."""
    return torch.stack([it.teacher_emb for it in items]).float()


def make_perceptual(kind: str, teacher: KDSam, train_items: Sequence[Item], vgg_weights: str | None):
    if kind == "decoder":
        return DecoderPerceptualLoss(teacher)
    if kind == "vgg16":
        return VGGPerceptualLoss(vgg_weights, teacher_embeddings(train_items[:64]))  # PCA needs a sample
    if kind == "none":
        return None
    raise KdsamError(f"unknown perceptual loss {kind!r}; choose one of {', '.join(PERCEPTUAL)}")


@torch.no_grad()
def embedding_distance(student: KDSam, items: Sequence[Item], batch: int = 8) -> float:
    """Mean squared distance between student and teacher embeddings over `items`."""
    total = 0.0
    for i in range(0, len(items), batch):
        chunk = items[i : i + batch]
        x = torch.stack([it.student_input for it in chunk]).float()
        total += float(embedding_mse(student.image_encoder(x), teacher_embeddings(chunk))) * len(chunk)
    return total / max(len(items), 1)


def distill(
    teacher: KDSam,
    train: Dataset,
    val: Dataset,
    run_dir: str | Path,
    *,
    backbone: str = "resnet50",
    input_size: int = 512,
    backbone_weights: str | None = None,
    perceptual: str = "decoder",
    perceptual_weight: float = 1.0,
    perceptual_items: int | None = 4,
    vgg_weights: str | None = None,
    cache_dir: str | Path | None = None,
    cfg: FitConfig | None = None,
    resume: bool = False,
    splits: dict[str, list[str]] | None = None,
    extra_config: dict | None = None,
) -> KDSam:
    """Distil `teacher`'s image encoder into a new student; writes RUN/model.pt and returns the student.

    perceptual_items: how many images of each batch also get the perceptual term. SAM's mask decoder
    costs about as much as the student's encoder on a CPU, so a subsample keeps its signal at a
    fraction of the price (None: every image).
    """
    cfg = cfg or FitConfig()
    run = RunDir(run_dir)
    run.start("distill", resume)
    if splits is not None:
        run.write_split("distill", train.spec, splits)
    seed_everything(cfg.seed)
    student = build_student(teacher, backbone, input_size, backbone_weights, teacher_name=teacher.name)
    cache = TeacherCache(teacher, cache_dir)
    train_items = make_items(train, student, cache=cache)
    val_items = make_items(val, student, cache=cache)
    if not val_items:
        raise KdsamError(
            f"{val.spec}: the validation split has no usable image; model selection needs one (see --split-file)"
        )
    loss_p = make_perceptual(perceptual, teacher, train_items, vgg_weights)
    if isinstance(loss_p, DecoderPerceptualLoss):
        attach_teacher_logits(train_items, loss_p, teacher)
    config = {
        "teacher": teacher.spec,
        "student": student.spec,
        "perceptual": perceptual,
        "perceptual_weight": perceptual_weight,
        "perceptual_items_per_batch": perceptual_items,
        "train": {"spec": train.spec, "split": train.split, "n": len(train_items)},
        "val": {"spec": val.spec, "split": val.split, "n": len(val_items)},
        "fit": asdict(cfg),
        "cache": str(cache.dir),
        **(extra_config or {}),
    }
    run.write_config("distill", config)
    log.info(
        "distill: teacher %s -> %s; perceptual loss: %s (weight %g); backbone init: %s; teacher computed %d, reused %d",
        teacher.name, student.name, perceptual, perceptual_weight, student.spec["backbone_init"],
        cache.n_computed, cache.n_reused,
    )  # fmt: skip

    def step(batch: Sequence[Item], rng: np.random.Generator) -> dict[str, torch.Tensor]:
        x = torch.stack([it.student_input for it in batch]).float()
        target = teacher_embeddings(batch)
        emb = student.image_encoder(x)
        terms = {"mse": embedding_mse(emb, target)}
        if loss_p is not None:
            k = min(len(batch), perceptual_items or len(batch))  # batches are shuffled: any k will do
            parts = pick_parts(batch[:k], rng)
            boxes = prompt_boxes(batch[:k], parts, teacher)
            cached = [p.teacher_logits for p in parts]
            logits = None if cached[0] is None else torch.stack(cached).float()
            terms["perceptual"] = loss_p(emb[:k], target[:k], boxes, logits)
        terms["loss"] = terms["mse"] + perceptual_weight * terms.get("perceptual", 0.0)
        return terms

    def validate() -> dict[str, float]:
        mse = embedding_distance(student, val_items)
        return {"val_mse": mse, "val_loss": mse}

    fit(run, "distill", student, student.image_encoder, train_items, step, validate, cfg, resume)
    save_model(student, run.path / "model-distill.pt")
    save_model(student, run.model)
    run.finish("distill")
    return student
