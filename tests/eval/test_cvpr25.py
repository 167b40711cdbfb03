"""The in-process CVPR25 protocol against tests/eval/cvpr25_official.py (the published script
re-implemented): the same clicks and the same DSC, NSD, AUC and final values within 1e-6."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdsam.eval.cvpr25 import VolumeCase, next_click, run_case, truth_boxes
from kdsam.infer.cvpr25 import parse_case
from kdsam.infer.interactive3d import case_embeddings, segment_case25
from tests.eval import cvpr25_official as official
from tests.infer.fake_slices import FakeSlices
from tests.infer.test_cvpr25 import SIDE, volume

SPACING = [2.5, 0.8, 0.7]


@pytest.mark.parametrize("seed", range(12))
def test_click_placement_equals_the_script(seed: int) -> None:
    """Random errors, some touching the volume's border, some with tied EDT maxima (even-sided cubes)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((9, 20, 24), np.uint8)
    pred = np.zeros_like(truth)
    for _ in range(4):
        z, y, x = rng.integers(0, [9, 20, 24])
        r = rng.integers(1, 4, 3)
        (truth if rng.random() < 0.5 else pred)[
            max(0, z - r[0]) : z + r[0], max(0, y - r[1]) : y + r[1], x : x + 2 * r[2]
        ] = 1
    pred[rng.random(pred.shape) < 0.01] ^= 1
    clicks, order = [{"fg": [], "bg": []}], [[]]
    official.add_clicks(pred, truth, clicks, order)
    ours = next_click(pred == 1, truth == 1)
    if order[0] == [None]:
        assert ours is None
    else:
        assert ours == (tuple(clicks[0][order[0][0]][0]), order[0][0] == "fg")


def _container(imgs: np.ndarray, boxes, has_box: bool):
    """The official loop's `predict`: a CVPR25 case built as the script writes it, answered by kdsam."""
    embeddings = case_embeddings(FakeSlices(SIDE), imgs, None)

    def predict(clicks_cls, clicks_order, prev_pred):
        data = {"imgs": imgs, "spacing": np.array(SPACING)}
        if has_box:
            data["boxes"] = np.array(boxes, dtype=object)
        if prev_pred is not None:
            order = np.empty(len(clicks_order), dtype=object)
            order[:] = clicks_order
            data |= {"clicks": np.array(clicks_cls, dtype=object), "clicks_order": order, "prev_pred": prev_pred}
        return segment_case25(embeddings, parse_case(Path("CT_case.npz"), data))

    return predict


@pytest.mark.parametrize("has_box", [True, False])
def test_protocol_equals_the_script(has_box: bool) -> None:
    imgs, gts = volume()
    imgs[5:7, 12:16, 12:16] = 100  # a dim hole in A the stand-in misses: clicks keep coming there
    case = VolumeCase("CT_case.npz", imgs, gts, SPACING)
    ours = run_case(FakeSlices(SIDE), case, use_boxes=has_box)
    boxes = truth_boxes(gts, [1, 2])
    theirs = official.evaluate(_container(imgs, boxes, has_box), gts, SPACING, has_box)
    assert ours["clicks"] == theirs["clicks"] and ours["clicks_order"] == theirs["clicks_order"]
    assert any(o is not None for o in ours["clicks_order"][0])  # clicks did happen
    for step, scores in enumerate(ours["steps"], start=1):
        assert scores["dsc"] == pytest.approx(theirs[f"DSC_{step}"], abs=1e-6)
        assert scores["nsd"] == pytest.approx(theirs[f"NSD_{step}"], abs=1e-6)
    for key in ("DSC_AUC", "NSD_AUC", "DSC_Final", "NSD_Final"):
        assert ours[key] == pytest.approx(theirs[key], abs=1e-6)
    if not has_box:
        assert ours["steps"][0] == {"dsc": 0.0, "nsd": 0.0, "seconds": 0.0}


def test_truth_boxes_lie_on_the_largest_slice() -> None:
    _, gts = volume()
    gts[7, 10:26, 10:30] = 1  # slice 7 of A is the widest
    (box,) = truth_boxes(gts, [1])
    assert box == {
        "z_min": 2,
        "z_max": 9,
        "z_mid": 7,
        "z_mid_x_min": 10,
        "z_mid_y_min": 10,
        "z_mid_x_max": 29,
        "z_mid_y_max": 25,
    }


def test_evaluate_protocol_cvpr25_two_models_side_by_side(tmp_path: Path, capsys) -> None:
    """`kdsam evaluate --protocol cvpr25`: two models on an npz: folder (one case with its own
    boxes as an object array, one without), a table, a plot, per-case rows, a bad case skipped."""
    import json

    from kdsam.cli import main
    from kdsam.models.loading import save_model
    from kdsam.models.student import build_student

    imgs, gts = volume()
    data = tmp_path / "cases"
    data.mkdir()
    np.savez_compressed(data / "CT_a.npz", imgs=imgs, gts=gts, spacing=SPACING)
    boxes = np.array(truth_boxes(gts, [1, 2]), dtype=object)
    np.savez_compressed(data / "CT_b.npz", imgs=imgs, gts=gts, spacing=SPACING, boxes=boxes)
    np.savez_compressed(data / "CT_bad.npz", imgs=imgs[:, :5], gts=gts)
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"m{seed}.pt")
        save_model(build_student(None, "resnet18", 64), paths[-1])
    out = tmp_path / "out"
    command = ["evaluate", "--protocol", "cvpr25", "--data", f"npz:{data}", "--out", str(out)]
    assert main([*command, "--model", str(paths[0]), "--model", str(paths[1])]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_cases"] == 2 and [s["name"] for s in metrics["skipped"]] == ["CT_bad"]
    for result in metrics["models"].values():
        assert len(result["per_case"]) == 2 and all(len(r["steps"]) == 6 for r in result["per_case"])
        assert 0 <= result["mean"]["DSC_AUC"] <= 4
    assert (out / "dsc_per_step.png").stat().st_size > 0
    assert len((out / "per_case.csv").read_text().splitlines()) == 1 + 4
    assert "DSC_AUC" in capsys.readouterr().out


def test_protocol_on_an_nnunet_dataset(tmp_path: Path, capsys) -> None:
    """Volume layouts other than npz: come through the dataset registry (window, spacing along D, H, W)."""
    import json

    from kdsam.cli import main
    from kdsam.data.volumes.synthetic import write_synthetic_ct
    from kdsam.models.loading import save_model
    from kdsam.models.student import build_student

    root = write_synthetic_ct(tmp_path / "ct", n_cases=1, shape=(40, 40, 10))
    save_model(build_student(None, "resnet18", 64), tmp_path / "m.pt")
    out = tmp_path / "out"
    args = ["evaluate", "--protocol", "cvpr25", "--model", str(tmp_path / "m.pt"), "--data", f"nnunet:{root}"]
    assert main([*args, "--out", str(out)]) == 0
    (case,) = json.loads((out / "metrics.json").read_text())["models"][str(tmp_path / "m.pt")]["per_case"]
    assert case["classes"] == 2 and len(case["steps"]) == 6
