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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from kdsam.distill.items import TrainingSet
from kdsam.distill.run import RunDir
from kdsam.distill.runtime import Runtime, collective
from kdsam.distill.sampling import EpochSampler
from kdsam.errors import KdsamError
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


def loader(data: torch.utils.data.Dataset, cfg: FitConfig, rt: Runtime, sampler=None) -> DataLoader:
    return DataLoader(
        data,
        batch_size=cfg.batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        pin_memory=rt.device.type == "cuda",
        prefetch_factor=2 if cfg.workers else None,
    )


def to_device(batch: Batch, rt: Runtime) -> Batch:
    """Host-to-device copies that overlap compute (the loader pinned the memory on CUDA)."""
    if rt.device.type == "cpu":
        return batch
    out = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
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


def data_parallel(trainable: nn.Module, step: StepFn, rt: Runtime) -> nn.Module:
    """The step under DDP when there are several ranks: it broadcasts rank 0's weights, then averages
    the gradients over the ranks during backward. Unused parameters are expected (the decoder's IoU
    head gets no gradient from a mask loss)."""
    module = StepModule(trainable, step)
    if not rt.distributed:
        return module
    with collective("DistributedDataParallel setup"):
        return DistributedDataParallel(
            module,
            device_ids=[rt.device.index] if rt.device.type == "cuda" else None,
            find_unused_parameters=True,
        )


def _load_checkpoint(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated or foreign file: say which, not a pickle traceback
        raise KdsamError(
            f"{path}: unreadable checkpoint ({type(err).__name__}); delete it to restart the stage from scratch"
        ) from err


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
    rt: Runtime,
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
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)
    scaler = rt.grad_scaler()
    state: dict[str, Any] = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "rows": []}
    ckpt_path = run.checkpoint(stage)
    if resume:
        ckpt = _load_checkpoint(ckpt_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if "scaler" in ckpt:
            scaler.load_state_dict(ckpt["scaler"])
        state = ckpt["state"]
        log.info("%s: resumed after epoch %d from %s", stage, state["epoch"], ckpt_path)
        _apply_new_lr(optimizer, scheduler, ckpt.get("config", {}), cfg, stage)
    best_path = run.path / f"best-{stage}.pt"
    forward = data_parallel(trainable, step, rt)
    sampler = EpochSampler(len(train), rt.world_size, rt.rank, seed=cfg.seed)
    save_every_s = cfg.checkpoint_minutes * 60 or math.inf  # rank 0's clock decides, for every rank

    def save_checkpoint() -> None:
        save_torch(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "state": state,
                "config": asdict(cfg),
                "world_size": rt.world_size,
            },
        )

    val_loader = loader(Subset(val, rt.shard(range(len(val)))), cfg, rt)
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["bad_epochs"] >= cfg.patience:
            log.info("%s: early stop after %d epochs without improvement", stage, cfg.patience)
            break
        torch.manual_seed(cfg.seed * 1000 + epoch)
        part = state.pop("partial", None)  # where a mid-epoch checkpoint left this epoch
        position = part["position"] if part else 0
        sampler.set_epoch(epoch, start=position)
        train.set_epoch(epoch)
        trainable.train()
        # the sums so far are global: rank 0 carries them, the end-of-epoch all-reduce adds the rest
        sums: dict[str, float] = dict(part["sums"]) if part and rt.is_main else {}
        seen = part["seen"] if part and rt.is_main else 0
        t0 = time.perf_counter() - (part["train_seconds"] if part else 0.0)
        last_save = time.monotonic()
        batches = loader(train, cfg, rt, sampler)
        bar = tqdm(batches, desc=f"{stage} epoch {epoch}/{cfg.epochs}", leave=False, disable=not rt.is_main)
        for i, batch in enumerate(bar):
            if i % cfg.accumulate == 0:  # a step's first forward
                optimizer.zero_grad(set_to_none=True)
                step_items = min(cfg.accumulate * cfg.batch_size, len(sampler) - i * cfg.batch_size)
                bad_loss = None
            last = (i + 1) % cfg.accumulate == 0 or i + 1 == len(batches)
            batch = to_device(batch, rt)
            n = len(batch["index"])
            # DDP all-reduces the gradients only in the step's last backward
            with forward.no_sync() if rt.distributed and not last else contextlib.nullcontext():
                with rt.autocast():
                    terms = forward(batch)
                loss = terms["loss"]
                with collective("gradient all-reduce") if rt.distributed else contextlib.nullcontext():
                    scaler.scale(loss * (n / step_items)).backward()
            if not torch.isfinite(loss):
                bad_loss = loss.item()
            seen += n
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * n
            bar.set_postfix(loss=f"{loss.item():.4f}")
            if not last:
                continue
            due = rt.is_main and time.monotonic() - last_save >= save_every_s
            flags = rt.all_reduce({"bad": float(bad_loss is not None), "save": float(due)})  # one collective
            if flags["bad"]:
                raise KdsamError(
                    f"{stage}: loss became {bad_loss if bad_loss is not None else 'non-finite on another rank'} in "
                    f"epoch {epoch}; the last good checkpoint {ckpt_path} is kept: lower --lr and rerun with --resume"
                )
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            position += cfg.global_batch(rt.world_size)
            if flags["save"] and i + 1 < len(batches):  # the last step's checkpoint follows validation
                totals = rt.all_reduce({**sums, "n_seen": seen}, same_keys=False)
                state["partial"] = {"epoch": epoch, "position": position, "seen": totals.pop("n_seen"),
                                    "sums": totals, "train_seconds": time.perf_counter() - t0}  # fmt: skip
                if rt.is_main:
                    save_checkpoint()
                    log.info("%s epoch %d: checkpoint at image %d of %d", stage, epoch, position, len(train))
                del state["partial"]
                last_save = time.monotonic()
        train_seconds = time.perf_counter() - t0
        trainable.eval()
        val_sums: dict[str, float] = {}
        with torch.no_grad(), rt.autocast():
            for batch in val_loader:
                for k, v in val_step(to_device(batch, rt)).items():
                    val_sums[k] = val_sums.get(k, 0.0) + v
        totals = rt.all_reduce({**{f"train_{k}": v for k, v in sums.items()}, "n_train": seen,
                                **{f"val:{k}": v for k, v in val_sums.items()}}, same_keys=False)  # fmt: skip
        n_train = totals.pop("n_train")
        row = {
            "stage": stage,
            "epoch": epoch,
            **{k: v / n_train for k, v in totals.items() if k.startswith("train_")},
            **{k[4:]: v / len(val) for k, v in totals.items() if k.startswith("val:")},
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 2),
            "val_seconds": round(time.perf_counter() - t0 - train_seconds, 2),
            "world_size": rt.world_size,
            "global_batch_size": cfg.global_batch(rt.world_size),
            "train_images_per_s": round(n_train / max(train_seconds, 1e-9), 2),
        }
        scheduler.step(row["val_loss"])
        improved = row["val_loss"] < state["best_val"]
        if improved:
            state["best_val"], state["bad_epochs"] = row["val_loss"], 0
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["rows"].append(row)
        if rt.is_main:
            if improved:
                save_model(model, best_path)
            run.append_metrics(row)
            save_checkpoint()
        rt.barrier()
        log.info("%s epoch %d: %s", stage, epoch, {k: round(v, 5) for k, v in row.items() if isinstance(v, float)})
    if best_path.is_file():  # absent when a resumed run had nothing left to train
        model.load_state_dict(torch.load(best_path, map_location="cpu", weights_only=True)["state_dict"])
    return state["rows"]


def _apply_new_lr(optimizer, scheduler, old: dict[str, Any], cfg: FitConfig, stage: str) -> None:
    """A --lr other than the one the run started with takes effect on resume (the advice after a
    non-finite loss); the plateau counter restarts so the new rate gets its chance."""
    if old.get("lr") is None or math.isclose(old["lr"], cfg.lr):
        return
    for group in optimizer.param_groups:
        group["lr"] = cfg.lr
    scheduler.num_bad_epochs = 0
    log.info("%s: learning rate set to %g on resume (the run started with %g)", stage, cfg.lr, old["lr"])
