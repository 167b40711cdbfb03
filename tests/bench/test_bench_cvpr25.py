"""`kdsam bench --cvpr25`: seconds per step of a CVPR25 case (box, then 5 clicks), as JSON; the INT8
export runs the click steps through its prompt decoder."""

from __future__ import annotations

import json
from pathlib import Path

from kdsam.cli import main


def test_cvpr25_bench_times_six_steps_under_torch_and_int8(tmp_path: Path) -> None:
    out = tmp_path / "cvpr25.json"
    argv = ["bench", "--models", "student:resnet18@64", "--cvpr25", "--cvpr25-slices", "8", "--cvpr25-side", "64"]
    assert main([*argv, "--runtime", "torch,onnxruntime-int8", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["cvpr25_steps"]
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime-int8"]
    for row in rows:
        assert len(row["seconds_per_step"]) == 6 and all(s > 0 for s in row["seconds_per_step"])
        assert row["case"] == "8 slices of 64x64, 2 classes" and len(row["final_dsc_per_class"]) == 2
        assert row["meets_target"] == (row["worst_step_s"] <= 10.0)
