"""`kdsam evaluate` through kdsam.cli.main: saved predictions (fast) and the real LiteMedSAM teacher."""

from __future__ import annotations

import json

from kdsam.cli import main
from kdsam.data import dataset_splits
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
    argv = ["evaluate", "--predictions", str(perfect), "--predictions", str(partial), "--allow-missing"]
    assert main([*argv, "--data", f"folder:{synthetic_root}", "--split", "all", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.glob("*/metrics.json")) == ["metrics.json"] * 2
    table = json.loads((out / "comparison.json").read_text())
    assert table["models"] == [str(perfect), str(partial)]
    assert (out / "comparison.md").is_file() and (out / "comparison.html").is_file()


def test_predictions_score_every_image_that_has_one_and_say_which(synthetic_root, tmp_path, capsys):
    """What a new user types: no --split. All four images are scored, and the splits they belong to printed."""
    preds = truth_predictions(synthetic_root, tmp_path / "preds")
    out = tmp_path / "out"
    assert main(["evaluate", "--predictions", str(preds), "--data", f"folder:{synthetic_root}", "--out", str(out)]) == 0
    result = json.loads((out / "metrics.json").read_text())
    assert result["n_images"] == 4 and result["split"] is None
    assert result["coverage"] == {"n_scored": 4, "n_expected": 4, "missing": []}
    printed = capsys.readouterr().out
    assert "scored (all, the default): " in printed
    assert all(f"{s} {n} (" in printed for s, n in (("train", 2), ("val", 1), ("test", 1)))  # 4 images: 2/1/1
    assert all(name in printed for name in ("polyp_0000", "skin_0001", "fetal_head_0002", "breast_lesion_0003"))


def test_predictions_matching_nothing_or_a_subset_are_refused(synthetic_root, tmp_path, capsys):
    data = ["--data", f"folder:{synthetic_root}"]
    (tmp_path / "none").mkdir()
    (tmp_path / "none" / "other.png").write_bytes(b"")
    assert main(["evaluate", "--predictions", str(tmp_path / "none"), *data, "--out", str(tmp_path / "a")]) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]  # besides tqdm's
    assert "no image of" in err and "<sample name>.png" in err
    partial = truth_predictions(synthetic_root, tmp_path / "partial")
    (partial / "skin_0001.png").unlink()
    argv = ["evaluate", "--predictions", str(partial), *data, "--out", str(tmp_path / "b")]
    assert main(argv) == 2
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert "predictions for 3 of 4 images" in err and "skin_0001" in err and "--allow-missing" in err
    assert not (tmp_path / "b" / "metrics.json").exists()
    assert main([*argv, "--allow-missing"]) == 0
    result = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert result["coverage"] == {"n_scored": 3, "n_expected": 4, "missing": ["skin_0001"]}
    test_split = dataset_splits(f"folder:{synthetic_root}")["test"]
    expected = 2 if "skin_0001" in test_split else 0  # one split is refused only where it lacks a prediction
    assert main([*argv, "--split", "test", "--overwrite"]) == expected


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
