"""One way to run a training stage: what distill and finetune share around their own losses.

A stage starts (resume check, run folder, split, seed), indexes its data (refusing an empty
validation split, naming each skipped file), writes its config and fits, saves and finishes. The
stages differ only in the model they train and the loss they train it with.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from kdsam.data.dataset import Dataset
from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.items import Index, TrainingSet, index_dataset
from kdsam.distill.process import TrainingProcess
from kdsam.distill.run import RunDir
from kdsam.distill.trainer import FitConfig, StepFn, ValFn, fit, seed_everything
from kdsam.errors import KdsamError
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam

log = logging.getLogger("kdsam")

# Each stage's FitConfig defaults, stated once: the library, the commands and the demos read them here.
FIT_DEFAULTS: dict[str, dict[str, Any]] = {"distill": {}, "finetune": {"epochs": 10, "lr": 1e-4}}


def default_fit(stage: str, **overrides: Any) -> FitConfig:
    """The stage's FitConfig defaults (fine-tuning: 10 epochs at lr 1e-4), with `overrides`."""
    return FitConfig(**{**FIT_DEFAULTS[stage], **overrides})


def report_skipped(stage: str, split: str, index: Index) -> None:
    """Unreadable images and empty masks are skipped by name, never silently."""
    if index.skipped:
        names = "; ".join(f"{s['name']} ({s['reason']})" for s in index.skipped[:20])
        more = f"; and {len(index.skipped) - 20} more (see config.json)" if len(index.skipped) > 20 else ""
        log.warning("%s: skipped %d %s image(s): %s%s", stage, len(index.skipped), split, names, more)


def process_config(process: TrainingProcess, cfg: FitConfig) -> dict[str, Any]:
    """Where and how the stage ran, for config.json: a run's numbers mean little without it."""
    return {
        "device": str(process.device),
        "precision": str(process.amp_dtype or torch.float32).replace("torch.", ""),
        "world_size": process.world_size,
        "batch_size_per_rank": cfg.batch_size,
        "accumulate": cfg.accumulate,
        "global_batch_size": cfg.global_batch(process.world_size),
    }


class Stage:
    """One stage ("distill" or "finetune") of a run folder, from its start to its saved model.

    Use `Stage.begin`, then `index`, `write_config` and `fit_and_save`, in that order.
    """

    def __init__(self, name: str, run: RunDir, train: Dataset, val: Dataset, options: dict[str, Any],
                 cfg: FitConfig, process: TrainingProcess, resume: bool) -> None:  # fmt: skip
        self.name, self.run, self.train, self.val = name, run, train, val
        self.options, self.cfg, self.process, self.resume = options, cfg, process, resume
        self.train_index: Index | None = None
        self.val_index: Index | None = None

    @classmethod
    def begin(
        cls,
        name: str,
        run: RunDir,
        train: Dataset,
        val: Dataset,
        options: dict[str, Any],
        *,
        cfg: FitConfig,
        process: TrainingProcess,
        resume: bool,
        splits: dict[str, list[str]] | None,
    ) -> Stage:
        """Start (or resume) the stage in `run`: a resumed stage must have the same `options`, and
        trains on the data, and the seeded split, it started with; then seed every generator."""
        options = {**options, "data": train.location, "seed": cfg.seed}
        if resume:
            run.check_resume(name, options)
        run.start(name, resume, writer=process.is_main)
        if splits is not None and process.is_main:
            run.write_split(name, train.location, splits)
        seed_everything(cfg.seed)
        return cls(name, run, train, val, options, cfg, process, resume)

    def index(
        self,
        train_cache: EmbeddingCache | None,
        val_cache: EmbeddingCache | None,
        *,
        logits: bool = False,
        **drawn: Any,
    ) -> tuple[Index, Index]:
        """Index both splits (filling the caches), refuse an empty validation split (model selection
        needs one) and name each skipped file. `logits`: also cache the teacher's mask logits for
        the training split; `drawn`: `index_dataset`'s batch size, background share and seed."""
        self.train_index = index_dataset(self.train, self.process, train_cache, logits=logits, **drawn)
        self.val_index = index_dataset(self.val, self.process, val_cache, **drawn)
        if not self.val_index.entries:
            raise KdsamError(
                f"{self.val.location}: the validation split has no usable image; "
                "model selection needs one (see --split-file)"
            )
        report_skipped(self.name, "training", self.train_index)
        report_skipped(self.name, "validation", self.val_index)
        return self.train_index, self.val_index

    def write_config(self, head: dict[str, Any], cache: Path | None, extra: dict[str, Any] | None = None) -> None:
        """RUN/config.json's entry for this stage: the stage's own `head`, then the data, fit and
        process every stage records, the cache folder and any `extra` (rank 0 writes)."""
        if self.train_index is None or self.val_index is None:
            raise RuntimeError("Stage.index must run before Stage.write_config")
        config = {
            **head,
            "train": {"data": self.train.location, "split": self.train.split, **self.train_index.summary()},
            "val": {"data": self.val.location, "split": self.val.split, **self.val_index.summary()},
            "fit": asdict(self.cfg),
            **process_config(self.process, self.cfg),
            "cache": str(cache) if cache else None,
            **(extra or {}),
        }
        if self.process.is_main:
            self.run.write_config(self.name, config)

    def fit_and_save(self, model: KDSam, trainable: nn.Module, train_set: TrainingSet, val_set: TrainingSet,
                     step: StepFn, val_step: ValFn, keep: tuple[Path, ...] = ()) -> None:  # fmt: skip
        """Train `trainable` (part of `model`), save the best model to RUN/model.pt (and to each
        of `keep`), mark the stage finished, and wait for every rank."""
        if self.process.device.type == "cuda":
            model.image_encoder.to(memory_format=torch.channels_last)
        fit(
            self.run,
            self.name,
            model,
            trainable,
            train_set,
            val_set,
            step,
            val_step,
            self.cfg,
            self.process,
            self.resume,
        )
        if self.process.is_main:
            for path in (*keep, self.run.model):
                save_model(model, path)
            self.run.finish(self.name)
        self.process.barrier()
