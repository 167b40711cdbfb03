"""`--precision`: training's autocast dtype. A CPU stays fp32 unless bf16 is asked for, and bf16 is
refused where the CPU would only emulate it; a bf16 run lands where the fp32 run does."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import kdsam.distill.process as distill_process
from kdsam.distill.cache import open_cache
from kdsam.distill.process import TrainingProcess
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from kdsam.errors import KdsamError
from tests.distill.tiny import FAST, STUDENT

CPU = torch.device("cpu")


@pytest.fixture
def native_bf16(monkeypatch):
    """Whatever this machine's CPU: bf16 autocast computes the same, natively or emulated."""
    monkeypatch.setattr(distill_process, "cpu_has_native_bf16", lambda: True)


def test_cpu_precisions(monkeypatch):
    assert TrainingProcess(CPU).amp_dtype is None and TrainingProcess(CPU, precision="fp32").amp_dtype is None
    with pytest.raises(KdsamError, match=r"--precision fp16: .*CUDA"):
        TrainingProcess(CPU, precision="fp16")
    with pytest.raises(KdsamError, match="--precision fp8: choose one of auto, fp32, bf16, fp16"):
        TrainingProcess(CPU, precision="fp8")
    monkeypatch.setattr(distill_process, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(KdsamError, match=r"no native bf16 .*use --precision fp32"):
        TrainingProcess(CPU, precision="bf16")
    monkeypatch.setattr(distill_process, "cpu_has_native_bf16", lambda: True)
    process = TrainingProcess(CPU, precision="bf16")
    assert process.amp_dtype == torch.bfloat16 and not process.grad_scaler().is_enabled()  # bf16 needs no loss scaling
    with process.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.bfloat16


def test_bf16_training_on_cpu_lands_where_fp32_does(tmp_path, tiny_teacher, splits, native_bf16):
    """Both stages, the decoder perceptual loss and corrective clicks included, in bf16 and fp32 from
    the same seed: the validation losses agree within 5 % (bf16 keeps 8 bits of mantissa)."""
    rows = {}
    for precision in ("fp32", "bf16"):
        run = tmp_path / precision
        process = TrainingProcess(CPU, precision=precision)
        torch.manual_seed(0)
        once = replace(FAST, epochs=1)
        distill(tiny_teacher, splits["train"], splits["val"], run, cache_dir=tmp_path / "cache", cfg=once,
                perceptual="decoder", process=process, **STUDENT)  # fmt: skip
        finetune(run, splits["train"], splits["val"], cfg=replace(once, lr=1e-4), cache_dir=tmp_path / "cache",
                 process=process)  # fmt: skip
        rows[precision] = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        config = json.loads((run / "config.json").read_text())
        assert config["distill"]["precision"] == {"fp32": "float32", "bf16": "bfloat16"}[precision]
    for fp32, bf16 in zip(rows["fp32"], rows["bf16"], strict=True):
        assert bf16["val_loss"] == pytest.approx(fp32["val_loss"], rel=0.05), (fp32, bf16)


def test_the_teacher_fills_the_cache_in_the_runs_precision(tmp_path, tiny_teacher, native_bf16):
    """Under the same key: entries computed in bf16 serve fp32 runs, as a GPU-filled cache serves CPUs."""
    images = [np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)]
    fp32_cache = open_cache(tiny_teacher, tmp_path, TrainingProcess(CPU))
    bf16_cache = open_cache(tiny_teacher, tmp_path, TrainingProcess(CPU, precision="bf16"))
    assert (fp32_cache.dtype, bf16_cache.dtype) == (None, torch.bfloat16) and fp32_cache.dir == bf16_cache.dir
    fp32, bf16 = (c.compute(images).float() for c in (fp32_cache, bf16_cache))
    assert 1e-4 < float((bf16 - fp32).norm() / fp32.norm()) < 0.05  # bf16 did run, and stays close
