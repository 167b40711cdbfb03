"""`kdsam bench --cvpr24`: seconds per challenge case through predict's own path, as JSON."""

from __future__ import annotations

import json
from pathlib import Path

from kdsam.cli import main


def test_cvpr24_bench_times_both_cases_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "cvpr24.json"
    argv = ["bench", "--models", "student:resnet18@64", "--cvpr24", "--cvpr24-slices", "3", "--cvpr24-side", "96"]
    argv += ["--cvpr24-repeats", "2", "--runtime", "torch,onnxruntime-int8"]
    assert main([*argv, "--json", str(out)]) == 0
    report, int8 = json.loads(out.read_text())["cvpr24_cases"]
    assert (report["runtime"], int8["runtime"]) == ("torch", "onnxruntime-int8")
    assert int8["seconds_per_3d_case"] > 0 and int8["seconds_per_slice"]["encoder_s"] > 0
    assert (
        report["model"] == "student:resnet18@64" and report["case_3d"] == "3 slices of 96x96, 1 box through all of them"
    )
    assert report["seconds_per_2d_case"] > 0 and len(report["all_seconds"]["2d"]) == 2
    assert report["seconds_per_3d_case"] > 0
    assert report["seconds_per_slice"]["encoder_s"] > 0 and report["seconds_per_slice"]["decoder_s"] > 0
    assert report["meets_targets"]["2d"] == (report["seconds_per_2d_case"] <= 0.5)
    assert len(report["load_average_before"]) == 3


def test_cvpr24_bench_refuses_an_unknown_runtime(capsys) -> None:
    argv = ["bench", "--models", "student:resnet18@64", "--cvpr24", "--runtime", "tensorrt"]
    assert main(argv) == 2
    assert "unknown runtime 'tensorrt'" in capsys.readouterr().err
