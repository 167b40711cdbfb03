"""The loop both stages share: seeded epochs, validation, atomic resumable checkpoints, early stopping,
and a clear stop on a non-finite loss."""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from kdsam.distill.run import RunDir
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
    batch_size: int = 8
    lr_patience: int = 5  # ReduceLROnPlateau(factor 0.1), as the paper
    patience: int = 10  # early stopping, as the paper
    seed: int = 0
    grad_clip: float = 1.0


StepFn = Callable[[Sequence[Any], np.random.Generator], dict[str, torch.Tensor]]
ValFn = Callable[[], dict[str, float]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def fit(
    run: RunDir,
    stage: str,
    model: KDSam,
    trainable: nn.Module,
    items: Sequence[Any],
    step: StepFn,
    validate: ValFn,
    cfg: FitConfig,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Train `trainable` (a part of `model`) on `items`; `step` returns {"loss": ..., other terms}.

    Every epoch ends with validation (`validate()["val_loss"]` selects the model) and an atomic
    checkpoint of everything needed to continue, so Ctrl-C or a crash loses at most one epoch.
    The optimiser holds exactly `trainable`'s parameters. Returns the epoch rows.
    """
    if not items:
        raise KdsamError(f"{stage}: no usable training images (all unreadable or with empty masks)")
    params = [p for p in trainable.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.1, patience=cfg.lr_patience)
    state = {"epoch": 0, "best_val": math.inf, "bad_epochs": 0, "rows": []}
    ckpt_path = run.checkpoint(stage)
    if resume:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = ckpt["state"]
        log.info("%s: resumed after epoch %d from %s", stage, state["epoch"], ckpt_path)
    best_path = run.path / f"best-{stage}.pt"
    for epoch in range(state["epoch"] + 1, cfg.epochs + 1):
        if state["bad_epochs"] >= cfg.patience:
            log.info("%s: early stop after %d epochs without improvement", stage, cfg.patience)
            break
        rng = np.random.default_rng([cfg.seed, epoch])
        torch.manual_seed(cfg.seed * 1000 + epoch)
        order = rng.permutation(len(items))
        trainable.train()
        sums: dict[str, float] = {}
        t0 = time.perf_counter()
        batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        bar = tqdm(batches, desc=f"{stage} epoch {epoch}/{cfg.epochs}", leave=False)
        for batch in bar:
            terms = step([items[i] for i in batch], rng)
            loss = terms["loss"]
            if not torch.isfinite(loss):
                raise KdsamError(
                    f"{stage}: loss became {loss.item()} in epoch {epoch}; the last good checkpoint "
                    f"{ckpt_path} is kept: lower --lr and rerun with --resume"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(batch)
            bar.set_postfix(loss=f"{loss.item():.4f}")
        train_seconds = time.perf_counter() - t0
        trainable.eval()
        with torch.no_grad():
            val = validate()
        row = {
            "stage": stage,
            "epoch": epoch,
            **{f"train_{k}": v / len(items) for k, v in sums.items()},
            **val,
            "lr": optimizer.param_groups[0]["lr"],
            "train_seconds": round(train_seconds, 2),
            "val_seconds": round(time.perf_counter() - t0 - train_seconds, 2),
        }
        scheduler.step(val["val_loss"])
        if val["val_loss"] < state["best_val"]:
            state["best_val"], state["bad_epochs"] = val["val_loss"], 0
            save_model(model, best_path)
        else:
            state["bad_epochs"] += 1
        state["epoch"] = epoch
        state["rows"].append(row)
        run.append_metrics(row)
        save_torch(
            ckpt_path,
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "config": asdict(cfg),
            },
        )
        log.info("%s epoch %d: %s", stage, epoch, {k: round(v, 5) for k, v in row.items() if isinstance(v, float)})
    best = torch.load(best_path, map_location="cpu", weights_only=True)
    model.load_state_dict(best["state_dict"])
    return state["rows"]
