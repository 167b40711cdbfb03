"""Stage 1 trains the student's encoder toward the teacher; stage 2 trains only the decoder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from kdsam.distill.cache import EmbeddingCache
from kdsam.distill.items import TrainingSet, index_dataset
from kdsam.distill.process import TrainingProcess
from kdsam.distill.stage1 import distill, embedding_distance
from kdsam.distill.stage2 import finetune
from kdsam.errors import KdsamError
from kdsam.models.loading import load_saved_student
from kdsam.models.student import build_student
from tests.distill.tiny import FAST, STUDENT, cut_after_checkpoint


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _changed(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[k], v) for k, v in module.state_dict().items())


def test_stage1_lowers_embedding_distance_on_held_out_images(tmp_path, tiny_teacher, splits):
    torch.manual_seed(0)
    untrained = build_student(tiny_teacher, **STUDENT)
    cache = EmbeddingCache(tiny_teacher, tmp_path)
    index = index_dataset(splits["test"], TrainingProcess(torch.device("cpu")), cache)
    test_items = TrainingSet(splits["test"], index, untrained, teacher=tiny_teacher, teacher_cache=cache.dir)
    before = embedding_distance(untrained.eval(), test_items)
    student = distill(
        tiny_teacher, splits["train"], splits["val"], tmp_path / "run", cache_dir=tmp_path,
        cfg=replace(FAST, epochs=4), perceptual="none", **STUDENT,
    )  # fmt: skip
    after = embedding_distance(student.eval(), test_items)
    assert after < 0.7 * before


def test_stage1_updates_the_student_encoder_only(tmp_path, tiny_teacher, splits):
    teacher_before = _snapshot(tiny_teacher)
    torch.manual_seed(0)
    reference = build_student(tiny_teacher, **STUDENT)
    student = distill(
        tiny_teacher, splits["train"], splits["val"], tmp_path / "run", cache_dir=tmp_path, cfg=FAST,
        perceptual_items=1, **STUDENT,
    )  # fmt: skip
    assert _changed(_snapshot(reference.image_encoder), student.image_encoder)
    assert not _changed(_snapshot(reference.mask_decoder), student.mask_decoder)
    assert not _changed(teacher_before, tiny_teacher)
    config = json.loads((tmp_path / "run" / "config.json").read_text())["distill"]
    assert config["perceptual"] == "decoder"
    assert "distill: teacher tiny" in (tmp_path / "run" / "log.txt").read_text()


def test_stage2_updates_the_decoder_only(tmp_path, tiny_teacher, splits):
    run = tmp_path / "run"
    args = {"cache_dir": tmp_path, "cfg": FAST, "perceptual": "none", **STUDENT}
    distill(tiny_teacher, splits["train"], splits["val"], run, **args)
    before = load_saved_student(run)
    after = finetune(run, splits["train"], splits["val"], cfg=FAST, cache_dir=tmp_path)
    assert _changed(_snapshot(before.mask_decoder), after.mask_decoder)
    assert not _changed(_snapshot(before.image_encoder), after.image_encoder)
    stages = [row["stage"] for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]
    assert stages == ["distill", "distill", "finetune", "finetune"]


@pytest.mark.parametrize(
    ("minutes", "cut_at_save", "position"),
    [(30.0, 1, None), (1e-9, 4, 4)],  # 10 images, batch 4: saves after steps 1, 2, epoch 1's end, step 1
    ids=["after-epoch-1", "mid-epoch-2"],
)
def test_resume_after_interruption_matches_an_uninterrupted_run(
    tmp_path, tiny_teacher, splits, minutes, cut_at_save, position
):
    args = {"cache_dir": tmp_path, "perceptual": "none", **STUDENT}
    torch.manual_seed(0)
    full = distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "full", cfg=FAST, **args)
    torch.manual_seed(0)
    with cut_after_checkpoint(cut_at_save):
        distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "cut",
                cfg=replace(FAST, checkpoint_minutes=minutes), **args)  # fmt: skip
    partial = torch.load(tmp_path / "cut" / "checkpoint-distill.pt", weights_only=True)["state"].get("partial")
    assert (partial or {}).get("position") == position
    with pytest.raises(KdsamError, match="--resume"):
        distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "cut", cfg=FAST, **args)
    resumed = distill(tiny_teacher, splits["train"], splits["val"], tmp_path / "cut", cfg=FAST, resume=True, **args)
    for (k, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.allclose(a, b, atol=1e-6), k
    rows = {run: [json.loads(x) for x in (tmp_path / run / "metrics.jsonl").read_text().splitlines()]
            for run in ("full", "cut")}  # fmt: skip
    assert [r["train_loss"] for r in rows["cut"]] == pytest.approx([r["train_loss"] for r in rows["full"]], rel=1e-6)


def test_non_finite_loss_stops_with_a_clear_message(tmp_path, tiny_teacher, splits):
    with pytest.raises(KdsamError, match=r"loss became nan.*--resume"):
        distill(
            tiny_teacher, splits["train"], splits["val"], tmp_path / "run", cache_dir=tmp_path, cfg=FAST,
            perceptual="none", perceptual_weight=float("nan"), **STUDENT,
        )  # fmt: skip
