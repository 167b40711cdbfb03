"""CVPR24 challenge cases: the challenge's scores, and the predict -> evaluate round trip on a folder."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest

from kdsam.cli import main
from kdsam.eval.challenge import case_scores
from kdsam.models.loading import save_model
from kdsam.models.student import build_student


def blob_stack(d: int = 5, h: int = 90, w: int = 120) -> tuple[np.ndarray, np.ndarray]:
    """(DxHxW uint8 image, labels): an ellipsoid (1) and a smaller bright box (2), on noise."""
    z, y, x = np.mgrid[:d, :h, :w]
    ball = ((x - 50) / 30) ** 2 + ((y - 45) / 22) ** 2 + ((z - d // 2) / (d / 2 + 0.5)) ** 2 < 1
    cube = (abs(x - 95) < 12) & (abs(y - 30) < 10) & (z >= 1)
    rng = np.random.default_rng(1)
    img = (40 + 140 * ball + 200 * cube + rng.integers(0, 25, (d, h, w))).clip(0, 255).astype(np.uint8)
    return img, np.where(cube, 2, np.where(ball, 1, 0)).astype(np.uint8)


def test_challenge_scores_follow_the_official_conventions() -> None:
    gts = np.zeros((6, 20, 20), np.uint8)
    gts[1:5, 5:15, 5:15] = 1
    gts[2:4, 0:3, 0:3] = 2
    perfect = case_scores(gts, gts, [1.0, 1.0, 1.0], three_d=True)
    assert perfect == {"dsc": 1.0, "nsd": 1.0}
    shifted = np.roll(gts, 1, axis=2)
    near = case_scores(shifted, gts, [1.0, 1.0, 1.0], True)
    far = case_scores(shifted, gts, [1.0, 1.0, 5.0], True)  # spacing on the array axes as stored
    assert near["nsd"] == pytest.approx(1.0) and far["nsd"] < 0.9 and near["dsc"] == far["dsc"] < 1
    assert case_scores(np.zeros_like(gts), gts, [1.0] * 3, True) == {"dsc": 0.0, "nsd": 0.0}  # DSC <= 0.2: NSD 0
    gap = gts.copy()
    gap[gap == 1] = 3  # label 1 absent from both: its DSC is NaN and so is the case mean, as np.mean gives
    assert math.isnan(case_scores(gap, gap, [1.0] * 3, True)["dsc"])
    flat = case_scores(gts[2], gts[2], None, three_d=False)
    assert flat == {"dsc": 1.0, "nsd": 1.0}


@pytest.fixture
def cases(tmp_path: Path) -> tuple[Path, Path]:
    """imgs/ (two 2D and one 3D case) and gts/ with their truths."""
    imgs, gts = tmp_path / "imgs", tmp_path / "gts"
    imgs.mkdir()
    gts.mkdir()
    stack, labels = blob_stack(d=4, h=48, w=64)
    np.savez_compressed(imgs / "3DBox_a.npz", imgs=stack, boxes=np.array([[5, 8, 0, 40, 40, 3]]), spacing=[1, 1, 2])
    np.savez_compressed(gts / "3DBox_a.npz", gts=labels, spacing=[1.0, 1.0, 2.0])
    for i in range(2):
        image = np.repeat(stack[2][..., None], 3, axis=2)
        np.savez_compressed(imgs / f"2DBox_{i}.npz", imgs=image, boxes=np.array([[5, 8, 40, 40], [44, 10, 60, 29]]))
        np.savez_compressed(gts / f"2DBox_{i}.npz", gts=labels[2])
    return imgs, gts


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(build_student(None, "resnet18", 64), path)
    return str(path)


def test_folder_predict_skips_finished_cases_and_evaluate_scores_them(
    tiny_model: str, cases: tuple[Path, Path], tmp_path: Path, capsys, monkeypatch
) -> None:
    imgs, gts = cases
    segs = tmp_path / "segs"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["predict", "--model", tiny_model, "--input", str(imgs), "--out", str(segs)]) == 0
    assert sorted(p.name for p in segs.glob("*.npz")) == ["2DBox_1.npz"]  # rank 1 of 2: every second case
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    assert main(["predict", "--model", tiny_model, "--input", str(imgs), "--out", str(segs)]) == 0
    assert "2 segmented, 1 already done" in capsys.readouterr().out
    with np.load(segs / "3DBox_a.npz") as out:
        assert out["segs"].shape == (4, 48, 64) and out["segs"].dtype == np.uint8
    with np.load(segs / "2DBox_0.npz") as out:
        assert out["segs"].shape == (48, 64) and set(np.unique(out["segs"])) <= {0, 1, 2}
    with (segs / "efficiency.csv").open() as f:
        assert sorted(r["case"] for r in csv.DictReader(f)) == ["2DBox_0.npz", "3DBox_a.npz"]

    assert main(["evaluate", "--predictions", str(segs), "--gts", str(gts), "--out", str(tmp_path / "ev")]) == 0
    result = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert result["kind"] == "cvpr24" and result["n_cases"] == 3
    rows = {r["name"]: r for r in result["per_case"]}
    assert all(r["seconds"] > 0 for r in rows.values())  # rank 1's case from efficiency_rank1.csv
    with np.load(segs / "2DBox_0.npz") as out, np.load(gts / "2DBox_0.npz") as gt:
        assert rows["2DBox_0.npz"]["dsc"] == pytest.approx(case_scores(out["segs"], gt["gts"], None, False)["dsc"])
