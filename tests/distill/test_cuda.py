"""Training on CUDA: mixed precision, channels_last, the teacher batched. Skipped without a GPU."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.runtime import Runtime
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from tests.distill.tiny import FAST, STUDENT, make_tiny_teacher

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine"),
]


def test_teacher_on_cuda_matches_cpu_within_mixed_precision(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (60, 70, 3), dtype=np.uint8) for _ in range(3)]
    cpu = EmbeddingCache(make_tiny_teacher(), tmp_path / "cpu").compute(images).float()
    gpu = EmbeddingCache(make_tiny_teacher().cuda(), tmp_path / "gpu").compute(images).float()
    assert gpu.device.type == "cpu" and gpu.dtype == torch.float32
    assert float((gpu - cpu).abs().mean()) < 0.05 * float(cpu.abs().mean())


def test_distill_and_finetune_on_cuda_with_amp(tmp_path, splits):
    rt = Runtime(torch.device("cuda"))
    run = tmp_path / "run"
    cfg = replace(FAST, workers=2)
    distill(make_tiny_teacher(), splits["train"], splits["val"], run, cache_dir=tmp_path, cfg=cfg, runtime=rt,
            **STUDENT)  # fmt: skip
    student = finetune(run, splits["train"], splits["val"], cfg=cfg, runtime=rt, cache_dir=tmp_path,
                       augmentations=["flip"])  # fmt: skip
    assert next(student.parameters()).device.type == "cuda"
    config = json.loads((run / "config.json").read_text())
    assert config["distill"]["precision"] in ("bfloat16", "float16") and config["distill"]["device"] == "cuda"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in rows)
