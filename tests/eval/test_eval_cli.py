"""`kdsam evaluate` through kdsam.cli.main: saved predictions (fast) and the real LiteMedSAM teacher."""

from __future__ import annotations

import json

from kdsam.cli import main
from kdsam.utils.atomic import write_json

from .conftest import truth_predictions


def test_predictions_single_then_refuses_overwrite(synthetic_root, tmp_path, capsys):
    preds = truth_predictions(synthetic_root, tmp_path / "preds")
    args = ["evaluate", "--predictions", str(preds), "--data", f"folder:{synthetic_root}", "--split", "all"]
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_images"] == 4 and result["mean"]["dice"] == 1.0
    assert (out / "per_image.csv").is_file() and (out / "cases.png").is_file()
    assert "| 1.000 |" in capsys.readouterr().out
    assert main([*args, "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main([*args, "--out", str(out), "--overwrite"]) == 0


def test_several_sources_get_subfolders_and_a_comparison(synthetic_root, tmp_path):
    perfect = truth_predictions(synthetic_root, tmp_path / "perfect")
    partial = truth_predictions(synthetic_root, tmp_path / "partial")
    (partial / "skin_0001.png").unlink()
    out = tmp_path / "out"
    argv = ["evaluate", "--predictions", str(perfect), "--predictions", str(partial)]
    assert main([*argv, "--data", f"folder:{synthetic_root}", "--split", "all", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*/metrics.json")) == ["metrics.json"] * 2
    table = json.loads((out / "comparison.json").read_text())
    assert table["models"] == [str(perfect), str(partial)]
    assert (out / "comparison.md").is_file() and (out / "comparison.html").is_file()


def test_usage_errors_exit_2(synthetic_root, tmp_path, capsys):
    data = ["--data", f"folder:{synthetic_root}"]
    assert main(["evaluate", *data, "--out", str(tmp_path / "a")]) == 2
    assert main(["evaluate", "--predictions", str(tmp_path), *data, *data, "--out", str(tmp_path / "b")]) == 2
    assert main(["evaluate", "--model", "teacher:nope", *data, "--out", str(tmp_path / "c")]) == 2
    assert capsys.readouterr().err.count("kdsam evaluate: error:") == 3


def test_teacher_litemedsam_on_two_images(synthetic_root, tmp_path):
    split = write_json(tmp_path / "split.json", {"test": ["polyp_0000", "skin_0001"]}) or tmp_path / "split.json"
    out = tmp_path / "out"
    argv = ["evaluate", "--model", "teacher:litemedsam", "--data", f"folder:{synthetic_root}"]
    assert main([*argv, "--split-file", str(split), "--device", "cpu", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["model"] == "teacher:litemedsam" and result["box_mode"] == "components"
    assert [r["n_boxes"] for r in result["per_image"]] == [1, 1]
    assert result["settings"]["split_file"] == str(split)
    assert result["mean"]["dice"] > 0.8 and min(r["dice"] for r in result["per_image"]) > 0.8
