"""`kdsam demo --volumes` on a miniature configuration: every output, 3D scores of teacher and student."""

from __future__ import annotations

import json

import pytest

from kdsam.demo_volumes import VolumeDemoConfig, run_volume_demo
from kdsam.errors import KdsamError


def test_volume_demo_end_to_end(tmp_path):
    cfg = VolumeDemoConfig(
        n_cases=5, shape=(32, 32, 6), backbone="resnet18", input_size=64, distill_epochs=1, finetune_epochs=1,
        batch_size=4, prompt_mix="box",
    )  # fmt: skip
    out = tmp_path / "demo"
    run_volume_demo(out, cfg)
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"teacher:litemedsam", "student resnet18@64"}
    teacher = report["results"]["teacher:litemedsam"]
    assert teacher["n_cases"] == len(report["data"]["split"]["test"]) >= 1
    assert set(teacher["per_label"]) == {"liver", "kidney"} and teacher["mean"]["dice"] > 0.5
    for name in ("report.md", "report.html", "slices.png", "eval/teacher-litemedsam/metrics.json"):
        assert (out / name).stat().st_size > 0
    assert "HD95 (mm)" in (out / "report.md").read_text()
    with pytest.raises(KdsamError, match="already finished"):
        run_volume_demo(out, cfg)
