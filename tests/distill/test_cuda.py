"""Training on CUDA: mixed precision, channels_last, the teacher batched. Skipped without a GPU."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.process import TrainingProcess
from kdsam.distill.stage1 import distill
from kdsam.distill.stage2 import finetune
from tests.distill.tiny import FAST, STUDENT, cut_after_checkpoint, make_tiny_teacher

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
    process = TrainingProcess(torch.device("cuda"))
    run = tmp_path / "run"
    cfg = replace(FAST, workers=2)
    distill(make_tiny_teacher(), splits["train"], splits["val"], run, cache_dir=tmp_path, cfg=cfg, process=process,
            **STUDENT)  # fmt: skip
    student = finetune(run, splits["train"], splits["val"], cfg=cfg, process=process, cache_dir=tmp_path,
                       augmentations=["flip"])  # fmt: skip
    assert next(student.parameters()).device.type == "cuda"
    config = json.loads((run / "config.json").read_text())
    assert config["distill"]["precision"] in ("bfloat16", "float16") and config["distill"]["device"] == "cuda"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["train_loss"]) for r in rows)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
def test_run_cut_mid_epoch_on_cuda_resumes_like_an_uninterrupted_one(tmp_path, splits, monkeypatch, precision):
    """fp16 also restores the grad scaler; accumulation makes the cut fall between forwards of a step."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    process = TrainingProcess(torch.device("cuda"), precision=precision)
    cfg = replace(FAST, batch_size=2, accumulate=2)  # 10 images: steps of 4, 4, 2
    args = {"cache_dir": tmp_path, "perceptual": "none", "process": process, **STUDENT}

    def run(name: str, **kw):
        torch.manual_seed(0)
        return distill(make_tiny_teacher(), splits["train"], splits["val"], tmp_path / name, **args, **kw)

    full = run("full", cfg=cfg)
    with cut_after_checkpoint(4):  # after steps 1, 2, epoch 1's end, then epoch 2's step 1
        run("cut", cfg=replace(cfg, checkpoint_minutes=1e-9))
    resumed = run("cut", cfg=cfg, resume=True)
    # A replayed or skipped step moves weights by about lr (1e-3); bf16/fp16 rounding and CUDA's
    # atomics stay far below it.
    worst = max(float((a.float() - b.float()).abs().max()) for a, b in
                zip(full.state_dict().values(), resumed.state_dict().values(), strict=True))  # fmt: skip
    assert worst < 1e-4, worst
    losses = {name: [json.loads(x)["train_loss"] for x in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
              for name in ("full", "cut")}  # fmt: skip
    assert losses["cut"] == pytest.approx(losses["full"], rel=1e-3)


def test_the_decoder_batched_on_cuda_answers_as_the_loop_does():
    """On CUDA `KDSam.decode` defaults to one vmap call for the batch; the CPU-tested equality must
    hold for CUDA's kernels too (fp32; TF32 convolutions allow about 1e-3)."""
    model = make_tiny_teacher().cuda()
    torch.manual_seed(0)
    embeddings = torch.randn(4, 256, 64, 64, device="cuda")
    boxes = torch.tensor([[5.0, 8.0, 60.0, 90.0], [0.0, 0.0, 127.0, 127.0], [30.0, 40.0, 50.0, 45.0], [9, 9, 99, 99]])
    looped, batched = (model.decode(embeddings, boxes.cuda(), batched=b)[0] for b in (False, None))
    assert torch.allclose(looped, batched, rtol=1e-3, atol=1e-3)
