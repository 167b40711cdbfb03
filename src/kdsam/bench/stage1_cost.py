"""What a stage-1 epoch costs beyond the student's own forward and backward passes.

With teacher embeddings cached, an epoch should be little more than the student's fwd+bwd: this
measures both on the same images and batches, in one process, and reports the ratio.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from typing import Any

import torch

from kdsam.data import open_dataset
from kdsam.distill.items import TrainingSet, index_dataset
from kdsam.distill.process import TrainingProcess
from kdsam.distill.run import RunDir
from kdsam.distill.stage1 import distill
from kdsam.distill.trainer import FitConfig, loader
from kdsam.models.student import build_student
from kdsam.models.teachers import load_teacher


def _fwd_bwd_seconds(location: str, teacher, backbone: str, input_size: int, batch_size: int) -> float:
    """One pass over the training images: student forward + backward of an MSE, nothing else."""
    student = build_student(teacher, backbone, input_size)
    process = TrainingProcess(torch.device("cpu"))
    data = open_dataset(location, "train", max_side=1024)
    items = TrainingSet(data, index_dataset(data, process), student)
    encoder = student.image_encoder.train()
    target = torch.zeros(1, 256, 64, 64)
    inputs = [batch["x"] for batch in loader(items, FitConfig(batch_size=batch_size), process)]  # decoded untimed
    start = time.perf_counter()
    for x in inputs:
        torch.nn.functional.mse_loss(encoder(x), target.expand(len(x), -1, -1, -1)).backward()
    return time.perf_counter() - start


def stage1_epoch_cost(
    location: str,
    teacher_name: str = "litemedsam",
    backbone: str = "resnet50",
    input_size: int = 256,
    batch_size: int = 8,
    epochs: int = 3,
    perceptual: str = "none",
) -> dict[str, Any]:
    """Median training time of epochs 2.. of a real stage-1 run (cache already filled by epoch 1's
    set-up) against one fwd+bwd pass of the same student over the same images."""
    teacher = load_teacher(teacher_name)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = FitConfig(epochs=epochs, batch_size=batch_size, patience=epochs)
        train, val = (open_dataset(location, s, max_side=1024) for s in ("train", "val"))
        distill(
            teacher, train, val, f"{tmp}/run", backbone=backbone, input_size=input_size, perceptual=perceptual,
            cache_dir=f"{tmp}/cache", cfg=cfg,
        )  # fmt: skip
        rows = RunDir(f"{tmp}/run").read_metrics()
    epoch = statistics.median(r["train_seconds"] for r in rows[1:] or rows)
    fwd_bwd = statistics.median(_fwd_bwd_seconds(location, teacher, backbone, input_size, batch_size) for _ in range(2))
    return {
        "data": location,
        "student": f"{backbone}@{input_size}",
        "batch_size": batch_size,
        "perceptual": perceptual,
        "n_train": len(train),
        "epoch_train_seconds": round(epoch, 2),
        "student_fwd_bwd_seconds": round(fwd_bwd, 2),
        "ratio": round(epoch / fwd_bwd, 3),
        "target": 1.2,
    }
