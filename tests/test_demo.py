"""`kdsam demo` end to end on a miniature configuration: every output and the report schema."""

from __future__ import annotations

import json

import pytest

from kdsam.demo import DemoConfig, run_demo
from kdsam.errors import KdsamError


def test_demo_writes_report_overlays_and_curves(tmp_path):
    cfg = DemoConfig(n_images=8, backbone="resnet18", input_size=64, distill_epochs=1, finetune_epochs=1)
    report = run_demo(tmp_path / "demo", cfg)
    saved = json.loads((tmp_path / "demo" / "report.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert set(saved["teacher"]) >= {"name", "dice", "iou", "latency_ms"}
    assert set(saved["student"]) >= {"backbone", "input_size", "dice", "iou", "params_encoder", "latency_ms"}
    assert saved["teacher"]["dice"] > 0.8  # the real bundled teacher
    assert 0.0 <= saved["student"]["dice"] <= 1.0
    assert 0.0 <= saved["student"]["dice_int8"] <= 1.0  # the INT8 ONNX student, scored on the same test split
    assert "INT8 student" in (tmp_path / "demo" / "report.md").read_text()
    for name in ("report.md", "report.html", "overlays.png", "curves.png"):
        assert (tmp_path / "demo" / name).stat().st_size > 0
    assert "Dice" in (tmp_path / "demo" / "report.md").read_text()
    with pytest.raises(KdsamError, match="already finished"):
        run_demo(tmp_path / "demo", cfg)
