"""evaluate() on tiny folders with saved predictions (no model), the writers, comparison and overlays."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from PIL import Image

from kdsam.data import open_dataset
from kdsam.data.dataset import Dataset, Record
from kdsam.data.imageio import write_png
from kdsam.errors import KdsamError
from kdsam.eval import metrics
from kdsam.eval.compare import comparison, to_html, to_markdown
from kdsam.eval.evaluate import PredictionFolder, Prompting, evaluate, run_evaluation
from kdsam.report.overlays import grid, overlay

from .conftest import truth_predictions


def sample_named(root, name: str):
    dataset = open_dataset(f"folder:{root}")
    return dataset[dataset.names.index(name)]


SCHEMA = {"model", "data", "split", "n_images", "mean", "per_image", "n_skipped", "skipped", "box_mode", "settings"}


def test_saved_predictions_schema_values_and_skips(messy_root, tmp_path):
    preds = truth_predictions(messy_root, tmp_path / "preds")
    (preds / "polyp_0000.png").unlink()  # missing -> skipped
    truth = sample_named(messy_root, "fetal_head_0002").mask
    shifted = np.roll(truth, 6, axis=1)
    write_png(preds / "fetal_head_0002.png", shifted)
    write_png(preds / "skin_0001.png", np.zeros((7, 7), bool))  # wrong size -> skipped

    result = evaluate(PredictionFolder(preds, "perfect"), open_dataset(f"folder:{messy_root}"), progress=False)

    assert set(result) >= SCHEMA
    assert result["model"] == "perfect" and result["box_mode"] is None
    rows = {r["name"]: r for r in result["per_image"]}
    assert set(rows) == {"breast_lesion_0003", "fetal_head_0002"}
    assert rows["breast_lesion_0003"] == {
        "name": "breast_lesion_0003",
        "dice": 1.0,
        "iou": 1.0,
        "hd95": 0.0,
        "nsd": 1.0,
    }
    assert rows["fetal_head_0002"]["dice"] == pytest.approx(metrics.dice(shifted, truth))
    assert result["mean"]["dice"] == pytest.approx((1.0 + metrics.dice(shifted, truth)) / 2)
    kinds = {s["name"]: s["kind"] for s in result["skipped"]}
    assert kinds == {
        "polyp_0000": "no_prediction",
        "skin_0001": "bad_prediction",
        "normal (1)": "empty_truth",
        "broken": "unreadable",
    }
    assert result["n_skipped"] == 4 and result["n_images"] == 2
    assert all("broken.png" in s["reason"] for s in result["skipped"] if s["name"] == "broken")


def test_undefined_hd95_is_null_and_left_out_of_the_mean(synthetic_root, tmp_path):
    preds = truth_predictions(synthetic_root, tmp_path / "preds")
    write_png(preds / "skin_0001.png", np.zeros_like(sample_named(synthetic_root, "skin_0001").mask))
    result = evaluate(preds, open_dataset(f"folder:{synthetic_root}"), progress=False)
    row = next(r for r in result["per_image"] if r["name"] == "skin_0001")
    assert row["hd95"] is None and row["dice"] == 0.0 and row["nsd"] == 0.0
    assert result["mean"]["hd95"] == 0.0 and result["n_undefined"] == {"hd95": 1}
    assert result["mean"]["dice"] == pytest.approx(0.75)
    json.dumps(result, allow_nan=False)  # strict JSON: no NaN anywhere


def test_mm_metrics_and_head_circumference_from_meta(synthetic_root, tmp_path):
    preds = truth_predictions(synthetic_root, tmp_path / "preds")
    head = open_dataset(f"folder:{synthetic_root}").records[1]
    hc = metrics.head_circumference(sample_named(synthetic_root, head.name).mask, 0.2)
    record = Record(head.name, head.image, head.masks, {"pixel_size_mm": 0.2, "hc_mm": hc + 1.5})
    result = evaluate(preds, Dataset("hc18:x", [record], split="test"), progress=False)
    row = result["per_image"][0]
    assert row["hc_mm_error"] == pytest.approx(1.5, abs=1e-6)
    assert row["nsd_mm"] == 1.0 and row["hd95_mm"] == 0.0
    assert set(result["mean"]) == {"dice", "iou", "hd95", "nsd", "hd95_mm", "nsd_mm", "hc_mm_error"}
    assert result["split"] == "test"


def test_run_evaluation_writes_files_and_refuses_to_overwrite(synthetic_root, tmp_path):
    preds = truth_predictions(synthetic_root, tmp_path / "preds")
    dataset = open_dataset(f"folder:{synthetic_root}")
    out = tmp_path / "out"
    run_evaluation(preds, dataset, out, progress=False)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["n_images"] == 4
    with (out / "per_image.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["name"] for r in rows] == [r["name"] for r in saved["per_image"]]
    assert Image.open(out / "cases.png").size[0] > 100
    with pytest.raises(KdsamError, match="overwrite"):
        run_evaluation(preds, dataset, out, progress=False)
    run_evaluation(preds, dataset, out, overwrite=True, figure=False, progress=False)


def test_prompting_is_deterministic_per_sample(synthetic_root):
    sample = open_dataset(f"folder:{synthetic_root}")[0]
    sample.mask[:20, :20] = True  # a second component
    assert len(Prompting("components").boxes(sample)) == 2
    assert len(Prompting("all").boxes(sample)) == 1
    jittered = Prompting(jitter_seed=3).boxes(sample)
    np.testing.assert_array_equal(jittered, Prompting(jitter_seed=3).boxes(sample))
    assert not np.array_equal(jittered, Prompting().boxes(sample))


def fake_result(model: str, data: str, dice: float) -> dict:
    mean = {"dice": dice, "iou": dice - 0.1, "hd95": 3.25, "nsd": None}
    return {"model": model, "data": data, "split": "test", "n_images": 5, "n_skipped": 0, "mean": mean}


def test_comparison_table_shapes():
    results = [
        fake_result(m, d, 0.9)
        for m in ("teacher:litemedsam", "runs/student")
        for d in ("kvasir:/a/Kvasir-SEG", "busi:/b/BUSI")
    ]
    table = comparison(results)
    assert table["models"] == ["teacher:litemedsam", "runs/student"]
    assert table["datasets"] == ["kvasir Kvasir-SEG (test)", "busi BUSI (test)"]
    md = to_markdown(table)
    assert md.count("\n| runs/student | 0.900 | 0.800 | 3.25 | – | 0.900 |") == 1
    assert "kvasir Kvasir-SEG (test) HD95 (px)" in md
    assert to_html(table).count('colspan="4"') == 2
    with pytest.raises(KdsamError, match="two evaluations"):
        comparison(results + results[:1])


def test_overlay_and_grid(tmp_path):
    image = np.full((30, 40, 3), 100, np.uint8)
    mask = np.zeros((30, 40), bool)
    mask[5:25, 5:35] = True
    out = overlay(image, mask, (255, 0, 0))
    assert out.shape == image.shape and out.dtype == np.uint8
    assert (out[~mask] == 100).all() and out[15, 20, 0] > 100 and out[5, 5, 0] == 255
    path = grid([[image, out], [out]], tmp_path / "g.png", ["a", "b"], ["x", "y"])
    assert Image.open(path).format == "PNG"
