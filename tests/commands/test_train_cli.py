"""distill -> finetune -> evaluate through the CLI, with the real bundled teacher on a few images."""

from __future__ import annotations

import json

import pytest

from kdsam.cli import main
from kdsam.data.synthetic import write_synthetic


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return f"folder:{write_synthetic(tmp_path_factory.mktemp('data'), n=6)}"


def test_distill_finetune_evaluate(tmp_path, data, capsys, monkeypatch):
    monkeypatch.setenv("KDSAM_CACHE", str(tmp_path / "cache"))
    run = str(tmp_path / "run")
    common = ["--data", data, "--epochs", "1", "--batch-size", "2", "--max-side", "128"]
    student = ["--backbone", "resnet18", "--input-size", "64", "--perceptual", "none"]
    assert main(["distill", "--teacher", "litemedsam", "--out", run, *common, *student]) == 0
    assert main(["distill", "--teacher", "litemedsam", "--out", run, *common, *student]) == 2
    assert "has finished" in capsys.readouterr().err
    assert main(["finetune", "--run-dir", run, *common]) == 0
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", run, "--data", data, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert {r["name"] for r in metrics["per_image"]} == set(split["distill"]["test"])
    assert not set(split["distill"]["test"]) & set(split["distill"]["train"])
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["distill"]["teacher"]["name"] == "litemedsam"
    assert config["distill"]["student"]["backbone_init"] == "scratch"


def test_unknown_teacher_is_one_line(tmp_path, data, capsys):
    assert main(["distill", "--teacher", "sam_vit_x", "--data", data, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert "sam_vit_x" in err and "litemedsam" in err and len(err.splitlines()) == 1  # what exists


def test_missing_checkpoint_says_what_to_download(tmp_path, data, capsys):
    assert main(["distill", "--teacher", "sam_vit_b", "--data", data, "--out", str(tmp_path / "r")]) == 2
    assert "sam_vit_b_01ec64.pth" in capsys.readouterr().err
