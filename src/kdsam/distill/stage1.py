"""Stage 1: the student's encoder learns the teacher's embeddings (MSE + a perceptual term)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import EmbeddingCache, open_cache
from kdsam.distill.items import Index, TrainingSet
from kdsam.distill.losses import DecoderPerceptualLoss, embedding_mse
from kdsam.distill.process import TrainingProcess
from kdsam.distill.run import RunDir
from kdsam.distill.stage import Stage, default_fit
from kdsam.distill.trainer import Batch, FitConfig, loader, to_device
from kdsam.distill.vgg import VGGPerceptualLoss
from kdsam.errors import KdsamError
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student

log = logging.getLogger("kdsam")

PERCEPTUAL = ("decoder", "vgg16", "none")
# The share of a volume's slices without foreground that stage 1 also learns from; 0 scored best in
# scripts/volume_ablations.py (docs/volumes.md).
BACKGROUND_SLICES = 0.0


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
    process = TrainingProcess(student.device)
    total = sum(float(per_item_mse(student, to_device(b, process)).sum()) for b in loader(data, cfg, process))
    return total / max(len(data), 1)


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
    process: TrainingProcess | None = None,
    cache_batch_size: int = 8,
    background: float = BACKGROUND_SLICES,
    intensity: dict | None = None,
) -> KDSam:
    """Distil `teacher`'s image encoder into a new student (stage 1); writes RUN/model.pt.

    Teacher embeddings (and, for the decoder perceptual loss, the teacher's mask logits per box)
    missing from the cache are computed first, each rank taking its share; training then streams
    images and cached targets from disk.

    Arguments:
      teacher (KDSam): the SAM-family model whose Bx256x64x64 embeddings the student learns.
      train, val (Dataset): training and validation samples (HxWx3 images, HxW masks); model
        selection is on `val`, which must hold a usable image.
      run_dir (str or Path): the run folder (config.json, checkpoints, log.txt, model.pt).
      backbone (str): the student's CNN (`kdsam.models.student`); input_size (int): its square
        input side S, so its encoder maps Bx3xSxS to Bx256x64x64.
      backbone_weights (str or None): a local file of ImageNet weights for the backbone.
      perceptual (str): the second loss term, "decoder" (the teacher's mask decoder on both
        embeddings), "vgg16" or "none"; perceptual_weight (float): its weight.
      perceptual_items (int or None): how many images of each batch also get the perceptual term.
        SAM's mask decoder costs about as much as the student's encoder on a CPU, so a subsample
        keeps its signal at a fraction of the price (None: every image).
      vgg_weights (str or None): a local VGG16 file for perceptual="vgg16".
      cache_dir (str, Path or None): the embedding cache (None: $KDSAM_CACHE or ~/.cache/kdsam).
      cfg (FitConfig or None): epochs, lr, batch size, seed... (None: `default_fit("distill")`).
      resume (bool): continue the run's interrupted stage from its checkpoint.
      splits (dict or None): the seeded split to record in RUN/split.json.
      extra_config (dict or None): more entries for config.json.
      process (TrainingProcess or None): device, precision and process group (None: one CPU process).
      cache_batch_size (int): images per teacher forward while filling the cache.
      background (float): of a volume dataset's slices without foreground, the seeded fraction also
        trained on (embedding term only: no object to prompt the decoder term with).
      intensity (dict or None): how a volume dataset's voxels became the training slices (window,
        channel, modality); kept in the student's card, so `kdsam predict --window auto` maps a
        volume the same way.

    Returns:
      (KDSam): the student with the best validation weights, also saved to RUN/model.pt and
        RUN/model-distill.pt.

    Raises:
      KdsamError: an unknown perceptual loss, a finished or locked run folder, a resume whose
        options differ from the run's, a validation split with no usable image, or a non-finite
        loss (each one line).
    """
    cfg = cfg or default_fit("distill")
    process = process or TrainingProcess(torch.device("cpu"))
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
    }
    stage = Stage.begin("distill", run, train, val, options, cfg=cfg, process=process, resume=resume, splits=splits)
    student = build_student(teacher, backbone, input_size, backbone_weights, teacher_name=teacher.name)
    if intensity is not None:
        student.card["intensity"] = intensity
    if cfg.sync_bn:  # before the teacher's cache is filled: a refusal must not cost that
        student.image_encoder = process.sync_batchnorm(student.image_encoder)
    teacher.to(process.device)
    cache = open_cache(teacher, cache_dir, process)
    logits = perceptual == "decoder"
    train_index, val_index = stage.index(
        cache, cache, logits=logits, batch_size=cache_batch_size, background=background, seed=cfg.seed
    )
    loss_p = make_perceptual(perceptual, teacher, cache, train_index, vgg_weights)
    student.to(process.device)
    common = {"seed": cfg.seed, "teacher": teacher, "teacher_cache": cache.dir}
    train_set = TrainingSet(train, train_index, student, logits=logits, **common)
    val_set = TrainingSet(val, val_index, student, **common)
    head = {
        "teacher": teacher.card,
        "student": student.card,
        "options": stage.options,
        "perceptual": perceptual,
        "perceptual_weight": perceptual_weight,
        "perceptual_items_per_batch": perceptual_items,
    }
    stage.write_config(head, cache.dir, extra_config)
    n_cached = len(train_index.entries) + len(val_index.entries)
    log.info(
        "distill: teacher %s -> %s; perceptual loss: %s (weight %g); backbone init: %s; %d process(es) on %s; "
        "teacher computed %d image(s), reused %d",
        teacher.name, student.name, perceptual, perceptual_weight, student.card["backbone_init"], process.world_size,
        process.device, train_index.computed + val_index.computed, n_cached - train_index.computed - val_index.computed,
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

    stage.fit_and_save(student, student.image_encoder, train_set, val_set, step, val_step,
                       keep=(run.path / "model-distill.pt",))  # fmt: skip
    return student
