"""Stage 1: the student's encoder learns the teacher's embeddings (MSE + a perceptual term)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import torch

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import EmbeddingCache, open_cache
from kdsam.distill.items import Index, TrainingSet, index_dataset
from kdsam.distill.losses import DecoderPerceptualLoss, embedding_mse
from kdsam.distill.run import RunDir
from kdsam.distill.runtime import Runtime
from kdsam.distill.trainer import Batch, FitConfig, fit, loader, seed_everything, to_device
from kdsam.distill.vgg import VGGPerceptualLoss
from kdsam.errors import KdsamError
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student

log = logging.getLogger("kdsam")

PERCEPTUAL = ("decoder", "vgg16", "none")
BACKGROUND_SLICES = 0.1  # of a volume's slices without foreground, the share stage 1 also learns from


def make_perceptual(kind: str, teacher: KDSam, cache: EmbeddingCache, index: Index, vgg_weights: str | None):
    if kind == "decoder":
        return DecoderPerceptualLoss(teacher)
    if kind == "vgg16":  # its PCA projection needs a sample of teacher embeddings
        sample = torch.stack([cache.load(e.key) for e in index.entries[:64]]).float()
        return VGGPerceptualLoss(vgg_weights, sample).to(teacher.device)
    if kind == "none":
        return None
    raise KdsamError(f"unknown perceptual loss {kind!r}; choose one of {', '.join(PERCEPTUAL)}")


def perceptual_rows(batch: Batch, loss: torch.nn.Module, most: int | None) -> torch.Tensor:
    """The batch items that get the perceptual term: the first `most` (batches are shuffled, so any
    will do) of those with a box when the term is the decoder's (volume slices without foreground
    have none)."""
    n = len(batch["x"])
    rows = torch.arange(n, device=batch["x"].device)
    if getattr(loss, "name", "") == "decoder":
        rows = rows[batch["has_box"].bool()]
    return rows[: most or n]


def per_item_mse(student: KDSam, batch: Batch) -> torch.Tensor:
    """Mean squared embedding distance of each item of a batch to its teacher embedding."""
    emb = student.image_encoder(batch["x"]).float()
    return ((emb - batch["teacher_emb"].float()) ** 2).flatten(1).mean(1)


@torch.no_grad()
def embedding_distance(student: KDSam, data: TrainingSet, batch: int = 8) -> float:
    """Mean squared distance between student and teacher embeddings over `data`."""
    cfg = FitConfig(batch_size=batch)
    rt = Runtime(student.device)
    total = sum(float(per_item_mse(student, to_device(b, rt)).sum()) for b in loader(data, cfg, rt))
    return total / max(len(data), 1)


def report_skipped(stage: str, split: str, index: Index) -> None:
    """Unreadable images and empty masks are skipped by name, never silently."""
    if index.skipped:
        names = "; ".join(f"{s['name']} ({s['reason']})" for s in index.skipped[:20])
        more = f"; and {len(index.skipped) - 20} more (see config.json)" if len(index.skipped) > 20 else ""
        log.warning("%s: skipped %d %s image(s): %s%s", stage, len(index.skipped), split, names, more)


def runtime_config(rt: Runtime, cfg: FitConfig) -> dict:
    return {
        "device": str(rt.device),
        "precision": str(rt.amp_dtype or torch.float32).replace("torch.", ""),
        "world_size": rt.world_size,
        "batch_size_per_rank": cfg.batch_size,
        "accumulate": cfg.accumulate,
        "global_batch_size": cfg.global_batch(rt.world_size),
    }


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
    runtime: Runtime | None = None,
    cache_batch_size: int = 8,
    background: float = BACKGROUND_SLICES,
    intensity: dict | None = None,
) -> KDSam:
    """Distil `teacher`'s image encoder into a new student; writes RUN/model.pt and returns the student.

    Teacher embeddings (and, for the decoder perceptual loss, the teacher's mask logits per box)
    missing from the cache are computed first, each rank taking its share; training then streams
    images and cached targets from disk.

    perceptual_items: how many images of each batch also get the perceptual term. SAM's mask decoder
    costs about as much as the student's encoder on a CPU, so a subsample keeps its signal at a
    fraction of the price (None: every image).

    background: of a volume dataset's slices without foreground, the seeded fraction also trained on
    (embedding term only: no object to prompt the decoder term with).

    intensity: how a volume dataset's voxels became the training slices (window, channel, modality);
    kept in the student's spec, so `kdsam predict --window auto` maps a volume the same way.
    """
    cfg = cfg or FitConfig()
    rt = runtime or Runtime(torch.device("cpu"))
    if perceptual not in PERCEPTUAL:
        raise KdsamError(f"unknown perceptual loss {perceptual!r}; choose one of {', '.join(PERCEPTUAL)}")
    run = RunDir(run_dir)
    options = {
        "teacher": teacher.name,
        "backbone": backbone,
        "input_size": input_size,
        "perceptual": perceptual,
        "perceptual_weight": perceptual_weight,
        "perceptual_items": perceptual_items,
        "background_slices": background,
        "data": train.spec,  # a resumed run trains on the data, and the seeded split, it started with
        "seed": cfg.seed,
    }
    if resume:
        run.check_resume("distill", options)
    run.start("distill", resume, writer=rt.is_main)
    if splits is not None and rt.is_main:
        run.write_split("distill", train.spec, splits)
    seed_everything(cfg.seed)
    student = build_student(teacher, backbone, input_size, backbone_weights, teacher_name=teacher.name)
    if intensity is not None:
        student.spec["intensity"] = intensity
    if cfg.sync_bn:  # before the teacher's cache is filled: a refusal must not cost that
        student.image_encoder = rt.sync_batchnorm(student.image_encoder)
    teacher.to(rt.device)
    cache = open_cache(teacher, cache_dir, rt)
    logits = perceptual == "decoder"
    drawn = {"background": background, "seed": cfg.seed}
    train_index = index_dataset(train, rt, cache, logits=logits, batch_size=cache_batch_size, **drawn)
    val_index = index_dataset(val, rt, cache, batch_size=cache_batch_size, **drawn)
    if not val_index.entries:
        raise KdsamError(
            f"{val.spec}: the validation split has no usable image; model selection needs one (see --split-file)"
        )
    report_skipped("distill", "training", train_index)
    report_skipped("distill", "validation", val_index)
    loss_p = make_perceptual(perceptual, teacher, cache, train_index, vgg_weights)
    student.to(rt.device)
    if rt.device.type == "cuda":
        student.image_encoder.to(memory_format=torch.channels_last)
    common = {"seed": cfg.seed, "teacher": teacher, "teacher_cache": cache.dir}
    train_set = TrainingSet(train, train_index, student, logits=logits, **common)
    val_set = TrainingSet(val, val_index, student, **common)
    config = {
        "teacher": teacher.spec,
        "student": student.spec,
        "options": options,
        "perceptual": perceptual,
        "perceptual_weight": perceptual_weight,
        "perceptual_items_per_batch": perceptual_items,
        "train": {"spec": train.spec, "split": train.split, **train_index.summary()},
        "val": {"spec": val.spec, "split": val.split, **val_index.summary()},
        "fit": asdict(cfg),
        **runtime_config(rt, cfg),
        "cache": str(cache.dir),
        **(extra_config or {}),
    }
    if rt.is_main:
        run.write_config("distill", config)
    n_cached = len(train_index.entries) + len(val_index.entries)
    log.info(
        "distill: teacher %s -> %s; perceptual loss: %s (weight %g); backbone init: %s; %d process(es) on %s; "
        "teacher computed %d image(s), reused %d",
        teacher.name, student.name, perceptual, perceptual_weight, student.spec["backbone_init"], rt.world_size,
        rt.device, train_index.computed + val_index.computed, n_cached - train_index.computed - val_index.computed,
    )  # fmt: skip

    def step(batch: Batch) -> dict[str, torch.Tensor]:
        target = batch["teacher_emb"].float()
        emb = student.image_encoder(batch["x"])
        terms = {"mse": embedding_mse(emb.float(), target)}
        if loss_p is not None:
            rows = perceptual_rows(batch, loss_p, perceptual_items)
            cached = batch["teacher_logits"][rows].float() if "teacher_logits" in batch else None
            terms["perceptual"] = (
                loss_p(emb[rows], target[rows], batch["teacher_box"][rows], cached) if len(rows) else emb.new_zeros(())
            )
        terms["loss"] = terms["mse"] + perceptual_weight * terms.get("perceptual", 0.0)
        return terms

    def val_step(batch: Batch) -> dict[str, float]:
        total = float(per_item_mse(student, batch).sum())
        return {"val_mse": total, "val_loss": total}

    fit(run, "distill", student, student.image_encoder, train_set, val_set, step, val_step, cfg, rt, resume)
    if rt.is_main:
        save_model(student, run.path / "model-distill.pt")
        save_model(student, run.model)
        run.finish("distill")
    rt.barrier()
    return student
