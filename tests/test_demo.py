"""`kdsam demo` end to end on a miniature configuration: every output, the report schema, and a
student that learned something (it beats the same architecture untrained on the same test images)."""

from __future__ import annotations

import json

import pytest
import torch

from kdsam.data import open_dataset
from kdsam.demo import DemoConfig, run_demo
from kdsam.errors import KdsamError
from kdsam.eval.evaluate import evaluate
from kdsam.models.student import build_student
from kdsam.models.teachers import load_teacher

# Measured on this configuration (2 test images): teacher 0.946, student 0.163, untrained 0.000.
TEACHER_FLOOR = 0.8
LEARNED_MARGIN = 0.05


def test_demo_writes_report_overlays_and_curves(tmp_path):
    cfg = DemoConfig(n_images=8, backbone="resnet18", input_size=64, distill_epochs=1, finetune_epochs=1)
    report = run_demo(tmp_path / "demo", cfg)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["teacher"]) >= {"name", "dice", "iou", "latency_ms"}
    assert set(saved["student"]) >= {"backbone", "input_size", "dice", "iou", "params_encoder", "latency_ms"}
    assert saved["machine"]["threads"] == torch.get_num_threads() and saved["machine"]["torch"] == torch.__version__
    assert saved["teacher"]["dice"] > TEACHER_FLOOR  # the real bundled teacher
    test = open_dataset(f"folder:{tmp_path / 'demo' / 'data'}", "test", split_file=tmp_path / "demo" / "split.json")
    torch.manual_seed(cfg.seed)
    untrained = build_student(load_teacher("litemedsam"), cfg.backbone, cfg.input_size)  # the teacher's heads
    floor = evaluate(untrained, test, progress=False)["mean"]["dice"]
    assert saved["student"]["dice"] > floor + LEARNED_MARGIN
    # the INT8 ONNX student, scored on the same test split, stays close to its fp32 self
    assert abs(saved["student"]["dice_int8"] - saved["student"]["dice"]) <= 0.05
    assert "INT8 student" in (tmp_path / "demo" / "report.md").read_text()
    for name in ("report.md", "report.html", "overlays.png", "curves.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    assert "Dice" in (tmp_path / "demo" / "report.md").read_text()
    with pytest.raises(KdsamError, match="already finished"):
        run_demo(tmp_path / "demo", cfg)
