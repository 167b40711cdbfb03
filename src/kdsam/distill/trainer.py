"""The loop both stages share: seeded epochs over a streamed DataLoader, data-parallel ranks, mixed
precision on CUDA, validation, atomic resumable checkpoints, early stopping, and a clear stop on a
non-finite loss."""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from kdsam.distill.items import TrainingSet
from kdsam.distill.process import TrainingProcess, collective
from kdsam.distill.run import RunDir
from kdsam.distill.sampling import EpochSampler
from kdsam.errors import KdsamError
from kdsam.models.checkpoint import load_weights_only
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam
from kdsam.utils.atomic import save_torch

log = logging.getLogger("kdsam")


@dataclass
class FitConfig:
    epochs: int = 30
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 8  # per rank and forward; the global batch is batch_size x accumulate x world size
    accumulate: int = 1  # forwards whose gradients add up to one optimizer step (a batch too big for memory)
    lr_patience: int = 5  # ReduceLROnPlateau(factor 0.1), as the paper
    patience: int = 10  # early stopping, as the paper
    seed: int = 0
    grad_clip: float = 1.0
    workers: int = 0  # DataLoader worker processes (0: load in the training process)
    sync_bn: bool = False  # under DDP on CUDA: BatchNorm statistics over the global batch
    checkpoint_minutes: float = 30.0  # also checkpoint mid-epoch this often (0: at epoch ends only)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise KdsamError(f"--epochs {self.epochs}: train for at least 1 epoch")
        if self.batch_size < 1:
            raise KdsamError(f"--batch-size {self.batch_size}: a batch needs at least 1 image")
        if self.accumulate < 1:
            raise KdsamError(f"--accumulate {self.accumulate}: an optimizer step needs at least 1 forward")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise KdsamError(f"--lr {self.lr}: the learning rate must be a positive finite number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise KdsamError(f"--weight-decay {self.weight_decay}: must be a finite number >= 0")
        if self.patience < 1 or self.workers < 0:
            raise KdsamError("--patience must be at least 1 and --workers at least 0")
        if not (math.isfinite(self.checkpoint_minutes) and self.checkpoint_minutes >= 0):
            raise KdsamError(f"--checkpoint-minutes {self.checkpoint_minutes}: must be a finite number >= 0")

    def global_batch(self, world_size: int) -> int:
        """Items per optimizer step over all ranks."""
        return self.batch_size * self.accumulate * world_size


Batch = dict[str, torch.Tensor]
StepFn = Callable[[Batch], dict[str, torch.Tensor]]  # the batch's mean loss terms, "loss" among them
ValFn = Callable[[Batch], dict[str, float]]  # per-item sums of the validation terms, "val_loss" among them


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loader(data: torch.utils.data.Dataset, cfg: FitConfig, process: TrainingProcess, sampler=None) -> DataLoader:
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=process.device.type == "cuda",
        prefetch_factor=2 if cfg.workers else None,
    )


def to_device(batch: Batch, process: TrainingProcess) -> Batch:
    """Host-to-device copies that overlap compute (the loader pinned the memory on CUDA)."""
    if process.device.type == "cpu":
        return batch
    out = {k: v.to(process.device, non_blocking=True) for k, v in batch.items()}
    if "x" in out:
        out["x"] = out["x"].contiguous(memory_format=torch.channels_last)
    return out


class StepModule(nn.Module):
    """One training step's forward as a module holding the trainable part, so that
    `DistributedDataParallel` can wrap it: stage 2 runs SAM's mask decoder once per prompt, several
    times in a step, and DDP must see that as one forward."""

    def __init__(self, trainable: nn.Module, step: StepFn) -> None:
        super().__init__()
        self.trainable = trainable
        self.step = step

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        return self.step(batch)


def data_parallel(trainable: nn.Module, step: StepFn, process: TrainingProcess) -> nn.Module:
    """The step under DDP when there are several ranks: it broadcasts rank 0's weights, then averages
    the gradients over the ranks during backward. Unused parameters are expected (the decoder's IoU
    head gets no gradient from a mask loss)."""
    module = StepModule(trainable, step)
    if not process.distributed:
        return module
    with collective("DistributedDataParallel setup"):
        return DistributedDataParallel(
            module,
            device_ids=[process.device.index] if process.device.type == "cuda" else None,
            find_unused_parameters=True,
        )


def fit(
    run: RunDir,
    stage: str,
    model: KDSam,
    trainable: nn.Module,
    train: TrainingSet,
    val: TrainingSet,
    step: StepFn,
    val_step: ValFn,
    cfg: FitConfig,
    process: TrainingProcess,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Train `trainable` (a part of `model`) on `train`; `val_step`'s summed "val_loss" over the
    validation set selects the model.

    Each rank trains on its share of every global batch (a permutation seeded per epoch) and
    DistributedDataParallel averages the gradients, so N ranks with batch B take the steps one
    process with batch N x B would; with `cfg.accumulate` A, each rank adds the gradients of A
    forwards (weighted by their share of the items) before the step, as one forward of A x B would.

    Every epoch ends with validation (sharded, sums all-reduced) and an atomic checkpoint written by
    rank 0 of everything needed to continue; every `cfg.checkpoint_minutes` one is also written
    mid-epoch, with the epoch's position and partial sums, so Ctrl-C, a crash or a pre-empted job
    loses at most that much. All ranks resume from it, with any number of ranks, and take the steps
    the uninterrupted run would have. Returns the epoch rows.
    """
    if len(train) == 0:
        raise KdsamError(f"{stage}: no usable training images (all unreadable or with empty masks)")
    loop = _Loop(run, stage, model, trainable, train, val, step, val_step, cfg, process)
    if resume:
        loop.resume()
    return loop.run()


@dataclass
class _Epoch:
    """One epoch's progress on this rank. A resumed epoch starts at its checkpoint's position, and
    rank 0 carries the global sums so far (the end-of-epoch all-reduce adds every rank's rest)."""

    number: int
    position: int = 0  # index into the epoch's permutation where the next global step starts
    sums: dict[str, float] = field(default_factory=dict)  # loss terms x items
    seen: int = 0
    t0: float = field(default_factory=time.perf_counter)

    @classmethod
    def resumed(cls, number: int, partial: dict[str, Any] | None, process: TrainingProcess) -> _Epoch:
        if partial is None:
            return cls(number)
        carried = process.is_main
        return cls(number, partial["position"], dict(partial["sums"]) if carried else {},
                   partial["seen"] if carried else 0, time.perf_counter() - partial["train_seconds"])  # fmt: skip

    def add(self, terms: dict[str, torch.Tensor], n: int) -> dict[str, float]:
        """Adds one forward's loss terms (means over its n items); returns them as numbers."""
        values = {k: float(v.detach()) for k, v in terms.items()}
        self.seen += n
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v * n
        return values


class _Loop:
    """The training state of one stage (optimizer, schedule, counters, checkpoint) and the parts of
    its loop: `run` goes through the epochs, each a pass of optimizer steps, then validation and a
    checkpoint."""

    def __init__(self, run: RunDir, stage: str, model: KDSam, trainable: nn.Module, train: TrainingSet,
                 val: TrainingSet, step: StepFn, val_step: ValFn, cfg: FitConfig,
                 process: TrainingProcess) -> None:  # fmt: skip
        self.run_dir, self.stage, self.model, self.trainable = run, stage, model, trainable
        self.train, self.val, self.val_step, self.cfg, self.process = train, val, val_step, cfg, process
        self.params = [p for p in trainable.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, factor=0.1, patience=cfg.lr_patience
        )
        self.scaler = process.grad_scaler()
        self.state: dict[str, Any] = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "rows": []}
        self.ckpt_path = run.checkpoint(stage)
        self.best_path = run.path / f"best-{stage}.pt"
        self.forward = data_parallel(trainable, step, process)
        self.sampler = EpochSampler(len(train), process.world_size, process.rank, seed=cfg.seed)
        self.val_loader = loader(Subset(val, process.shard(range(len(val)))), cfg, process)
        self.save_every_s = cfg.checkpoint_minutes * 60 or math.inf  # rank 0's clock decides for all

    def resume(self) -> None:
        ckpt = load_weights_only(self.ckpt_path, "a training checkpoint; delete it to restart the stage from scratch")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
        self.state = ckpt["state"]
        log.info("%s: resumed after epoch %d from %s", self.stage, self.state["epoch"], self.ckpt_path)
        _apply_new_lr(self.optimizer, self.scheduler, ckpt.get("config", {}), self.cfg, self.stage)

    def run(self) -> list[dict[str, Any]]:
        for number in range(self.state["epoch"] + 1, self.cfg.epochs + 1):
            if self.state["bad_epochs"] >= self.cfg.patience:
                log.info("%s: early stop after %d epochs without improvement", self.stage, self.cfg.patience)
                break
            epoch = self._train_epoch(number)
            self._end_epoch(epoch, time.perf_counter() - epoch.t0)
        if self.best_path.is_file():  # absent when a resumed run had nothing left to train
            state = torch.load(self.best_path, map_location="cpu", weights_only=True)["state_dict"]
            self.model.load_state_dict(state)
        return self.state["rows"]

    def _train_epoch(self, number: int) -> _Epoch:
        cfg, process = self.cfg, self.process
        torch.manual_seed(cfg.seed * 1000 + number)
        epoch = _Epoch.resumed(number, self.state.pop("partial", None), process)
        self.sampler.set_epoch(number, start=epoch.position)
        self.train.set_epoch(number)
        self.trainable.train()
        last_save = time.monotonic()
        batches = loader(self.train, cfg, process, self.sampler)
        bar = tqdm(batches, desc=f"{self.stage} epoch {number}/{cfg.epochs}", leave=False, disable=not process.is_main)
        for i, batch in enumerate(bar):
            if i % cfg.accumulate == 0:  # a step's first forward
                self.optimizer.zero_grad(set_to_none=True)
                step_items = min(cfg.accumulate * cfg.batch_size, len(self.sampler) - i * cfg.batch_size)
                bad_loss = None
            last = (i + 1) % cfg.accumulate == 0 or i + 1 == len(batches)
            loss = self._forward_backward(to_device(batch, process), step_items, epoch, sync=last)
            if not math.isfinite(loss):
                bad_loss = loss
            bar.set_postfix(loss=f"{loss:.4f}")
            if not last:
                continue
            due = process.is_main and time.monotonic() - last_save >= self.save_every_s
            flags = process.all_reduce({"bad": float(bad_loss is not None), "save": float(due)})  # one collective
            if flags["bad"]:
                raise KdsamError(
                    f"{self.stage}: loss became {bad_loss if bad_loss is not None else 'non-finite on another rank'} "
                    f"in epoch {number}; the last good checkpoint {self.ckpt_path} is kept: lower --lr and rerun "
                    "with --resume"
                )
            self._optimizer_step()
            epoch.position += cfg.global_batch(process.world_size)
            if flags["save"] and i + 1 < len(batches):  # the last step's checkpoint follows validation
                self._save_partial(epoch)
                last_save = time.monotonic()
        return epoch

    def _forward_backward(self, batch: Batch, step_items: int, epoch: _Epoch, sync: bool) -> float:
        """One forward's gradient, weighted by its share of the step's items, and its loss; DDP
        all-reduces the gradients only in a step's last backward (`sync`)."""
        process = self.process
        n = len(batch["index"])
        with self.forward.no_sync() if process.distributed and not sync else contextlib.nullcontext():
            with process.autocast():
                terms = self.forward(batch)
            with collective("gradient all-reduce") if process.distributed else contextlib.nullcontext():
                self.scaler.scale(terms["loss"] * (n / step_items)).backward()
        return epoch.add(terms, n)["loss"]

    def _optimizer_step(self) -> None:
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.params, self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()

    def _save_partial(self, epoch: _Epoch) -> None:
        """A mid-epoch checkpoint: the weights after this step, the position and the global sums."""
        totals = self.process.all_reduce({**epoch.sums, "n_seen": epoch.seen}, same_keys=False)
        self.state["partial"] = {"epoch": epoch.number, "position": epoch.position, "seen": totals.pop("n_seen"),
                                 "sums": totals, "train_seconds": time.perf_counter() - epoch.t0}  # fmt: skip
        if self.process.is_main:
            self._save()
            log.info("%s epoch %d: checkpoint at image %d of %d", self.stage, epoch.number, epoch.position,
                     len(self.train))  # fmt: skip
        del self.state["partial"]

    def _validate(self) -> dict[str, float]:
        self.trainable.eval()
        sums: dict[str, float] = {}
        for batch in self.val_loader:  # loaded outside autocast: a CPU's autocast would reach the data code too
            with torch.no_grad(), self.process.autocast():
                values = self.val_step(to_device(batch, self.process))
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
        return sums

    def _end_epoch(self, epoch: _Epoch, train_seconds: float) -> None:
        """Validation, the epoch's row, the schedule and early-stopping counters, and the checkpoint."""
        process, state = self.process, self.state
        val_sums = self._validate()
        totals = process.all_reduce({**{f"train_{k}": v for k, v in epoch.sums.items()}, "n_train": epoch.seen,
                                **{f"val:{k}": v for k, v in val_sums.items()}}, same_keys=False)  # fmt: skip
        n_train = totals.pop("n_train")
        row = {
            "stage": self.stage,
            "epoch": epoch.number,
            **{k: v / n_train for k, v in totals.items() if k.startswith("train_")},
            **{k[4:]: v / len(self.val) for k, v in totals.items() if k.startswith("val:")},
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 2),
            "val_seconds": round(time.perf_counter() - epoch.t0 - train_seconds, 2),
            "world_size": process.world_size,
            "global_batch_size": self.cfg.global_batch(process.world_size),
            "train_images_per_s": round(n_train / max(train_seconds, 1e-9), 2),
        }
        self.scheduler.step(row["val_loss"])
        improved = row["val_loss"] < state["best_val"]
        if improved:
            state["best_val"], state["bad_epochs"] = row["val_loss"], 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch.number
        state["rows"].append(row)
        if process.is_main:
            if improved:
                save_model(self.model, self.best_path)
            self.run_dir.append_metrics(row)
            self._save()
        process.barrier()
        log.info("%s epoch %d: %s", self.stage, epoch.number,
                 {k: round(v, 5) for k, v in row.items() if isinstance(v, float)})  # fmt: skip

    def _save(self) -> None:
        save_torch(
            self.ckpt_path,
            {
                "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict(),
                "state": self.state,
                "config": asdict(self.cfg),
                "world_size": self.process.world_size,
            },
        )


def _apply_new_lr(optimizer, scheduler, old: dict[str, Any], cfg: FitConfig, stage: str) -> None:
    """A --lr other than the one the run started with takes effect on resume (the advice after a
    non-finite loss); the plateau counter restarts so the new rate gets its chance."""
    if old.get("lr") is None or math.isclose(old["lr"], cfg.lr):
        return
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
    scheduler.num_bad_epochs = 0
    log.info("%s: learning rate set to %g on resume (the run started with %g)", stage, cfg.lr, old["lr"])
