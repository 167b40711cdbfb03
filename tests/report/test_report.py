"""kdsam report: inputs found by content, one page in HTML and markdown, the paper's table beside ours."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from kdsam.cli import main
from kdsam.errors import KdsamError
from kdsam.report import paper
from kdsam.report.page import make_report


def _bench_row(model: str, latency: float) -> dict:
    return {
        "model": model,
        "variant": "default",
        "status": "ok",
        "input_size": 256,
        "params_encoder": 5e6,
        "params_total": 9e6,
        "gflops": 75.0,
        "latency_ms_median": latency,
        "latency_ms_p90": latency,
    }


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    run = tmp_path / "runs" / "r50"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    lines = [{"stage": "distill", "epoch": e, "train_loss": 2 - e / 10, "val_loss": 2.1 - e / 10} for e in range(3)]
    lines.append({"stage": "finetune", "epoch": 0, "train_loss": 0.3, "val_loss": 0.4})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"stage": "fin')
    ev = run / "eval_kvasir"
    ev.mkdir()
    (ev / "metrics.json").write_text(
        json.dumps(
            {
                "model": str(run),
                "data": "/data/kvasir",
                "split": "test",
                "n_images": 5,
                "mean": {"dice": 0.91, "iou": 0.84, "hd95": 4.0, "nsd": 0.9},
                "per_image": [],
            }
        )
    )
    Image.new("RGB", (16, 16), "red").save(ev / "overlay_0001.png")
    (ev / "images").mkdir()
    Image.new("RGB", (16, 16), "blue").save(ev / "images" / "input_0001.png")  # data, not a figure
    (tmp_path / "teacher_eval.json").write_text(
        json.dumps(
            {
                "model": "teacher:litemedsam",
                "data": "/data/kvasir",
                "split": "test",
                "n_images": 5,
                "mean": {"dice": 0.93, "iou": 0.87, "hd95": 3.0, "nsd": 0.92},
                "per_image": [],
            }
        )
    )
    (tmp_path / "bench.json").write_text(
        json.dumps(
            {
                "device": "cpu",
                "device_name": "Test CPU",
                "threads": 2,
                "torch": "x",
                "results": [_bench_row("litemedsam", 1200.0), _bench_row(str(run), 150.0)],
                "targets": [{"target": "t", "measured": 3.0, "holds": True}],
            }
        )
    )
    return tmp_path


def test_report_puts_everything_on_one_page(inputs: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    code = main(
        [
            "report",
            str(inputs / "runs"),
            str(inputs / "teacher_eval.json"),
            str(inputs / "bench.json"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "| teacher:litemedsam | 0.930 | 0.870 | 5.0 | 1200.0 |" in md  # bench "litemedsam" joined by the grammar
    assert "kvasir Dice" in md and "Test CPU" in md and "0.822" in md  # ours, benchmark, paper's BUSI KD SAM
    curves = list((out / "curves").glob("*.png"))
    overlays = list((out / "overlays").glob("*.png"))
    assert len(curves) == 1 and len(overlays) == 1
    for png in (*curves, *overlays):
        assert png.relative_to(out).as_posix() in html and png.relative_to(out).as_posix() in md
    assert html.startswith("<!doctype html>") and "<table>" in html


def test_report_of_nothing_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdsamError, match="found no"):
        make_report([tmp_path / "empty"], tmp_path / "out")
    assert main(["report", str(tmp_path / "missing"), "--out", str(tmp_path / "out")]) == 2


def test_paper_table_is_rendered_from_the_published_data(monkeypatch, tmp_path: Path) -> None:
    header, rows = paper.published_table()
    assert header == ["dataset (test images)", *paper.METHODS] and "2501.16740" in paper.SOURCE
    for (name, (n, scores)), row in zip(paper.PUBLISHED_DICE.items(), rows, strict=True):
        assert row[0] == f"{name} ({n})"
        assert [float(c) for c in row[1:]] == [scores[m] for m in paper.METHODS]
    # the page shows what the data say, not a copy: change a score, the page changes with it
    changed = {**paper.PUBLISHED_DICE, "BUSI": (7, {m: 0.123 for m in paper.METHODS})}
    monkeypatch.setattr(paper, "PUBLISHED_DICE", changed)
    (tmp_path / "e.json").write_text(json.dumps({"model": "m", "data": "d", "mean": {"dice": 0.5}, "n_images": 1}))
    md = make_report([tmp_path / "e.json"], tmp_path / "out")["markdown"].read_text()
    assert "| BUSI (7) | 0.123 | 0.123 | 0.123 | 0.123 |" in md and "0.905" not in md
