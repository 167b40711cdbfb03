"""3D scores in millimetres: a sphere against a larger one, on grids of known spacing."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from kdsam.cli import main
from kdsam.eval.volumes import label_scores


def sphere(radius: float, shape=(40, 40, 40)) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(s) - s / 2 for s in shape], indexing="ij"))
    return (grid**2).sum(0) <= radius**2


def test_distances_are_in_mm_from_the_spacing() -> None:
    truth, pred = sphere(10).astype(int), sphere(12).astype(int)  # surfaces 2 voxels apart
    fine = label_scores(pred, truth, (0.5, 0.5, 0.5))[0]
    coarse = label_scores(pred, truth, (2.0, 2.0, 2.0))[0]
    assert fine["dice"] == coarse["dice"] == pytest.approx(2 * 10**3 / (10**3 + 12**3), abs=0.02)
    assert coarse["hd95_mm"] == pytest.approx(4 * fine["hd95_mm"]) and 3.0 <= coarse["hd95_mm"] <= 5.0
    assert fine["nsd"] == 1.0 and coarse["nsd"] < 0.3  # 1 mm apart vs 4 mm apart, at 2 mm tolerance


def test_evaluate_scores_nifti_volumes_per_label(tmp_path: Path) -> None:
    affine = np.diag([0.8, 0.8, 3.0, 1.0])
    truth = sphere(10).astype(np.uint8) + (sphere(4) & ~sphere(2)).astype(np.uint8)  # label 2 inside label 1
    for folder, data in (("gts", truth), ("preds", truth), ("bad", truth[:-1])):
        (tmp_path / folder).mkdir()
        nib.save(nib.Nifti1Image(data, affine), tmp_path / folder / "case.nii.gz")
    nib.save(nib.Nifti1Image(truth, affine), tmp_path / "gts" / "other.nii.gz")
    out = tmp_path / "ev"
    assert (
        main(["evaluate", "--predictions", str(tmp_path / "preds"), "--gts", str(tmp_path / "gts"), "--out", str(out)])
        == 0
    )
    result = json.loads((out / "metrics.json").read_text())
    (case,) = result["per_case"]
    assert case["spacing"] == pytest.approx([0.8, 0.8, 3.0]) and [r["label"] for r in case["labels"]] == [1, 2]
    assert case["dice"] == 1.0 and case["hd95_mm"] == 0.0 and case["nsd"] == 1.0
    assert result["skipped"][0]["kind"] == "no_prediction" and "other.nii.gz" in result["skipped"][0]["name"]
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(tmp_path / "bad"),
                "--gts",
                str(tmp_path / "gts"),
                "--out",
                str(out),
                "--overwrite",
            ]
        )
        == 2  # nothing could be scored: one line, and metrics.json says why
    )
    assert json.loads((out / "metrics.json").read_text())["skipped"][0]["kind"] == "bad_prediction"
