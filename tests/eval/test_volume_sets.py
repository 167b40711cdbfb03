"""`kdsam evaluate --data nnunet:PATH`: each label of each test case prompted with its 3D box, scored
in 3D in mm, per case and per label name, models side by side."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

import kdsam.data.registry as registry
from kdsam.cli import main
from kdsam.data.volumes.synthetic import write_synthetic_ct
from kdsam.eval.volume_sets import label_box3d, score_label


@pytest.fixture
def ct(tmp_path, monkeypatch):
    monkeypatch.setattr(registry, "_VOLUME_SETS", {})
    monkeypatch.setenv("KDSAM_CACHE", str(tmp_path / "cache"))
    root = write_synthetic_ct(tmp_path / "ct", n_cases=4, shape=(40, 40, 8))
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": ["ct_000"], "val": ["ct_001"], "test": ["ct_002", "ct_003"]}))
    empty = nib.load(str(root / "labelsTr" / "ct_003.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(empty.shape, np.uint8), empty.affine), root / "labelsTr" / "ct_003.nii.gz")
    return root, split


def test_label_box_is_inclusive_xyz():
    labels = np.zeros((5, 6, 7), np.uint8)
    labels[1:3, 2:5, 3:7] = 2
    assert label_box3d(labels, 2).tolist() == [3, 2, 1, 6, 4, 2]


def test_scores_use_the_spacing():
    truth = np.zeros((10, 10, 10), bool)
    truth[2:8, 2:8, 2:8] = True
    shifted = np.roll(truth, 1, axis=0)
    fine, coarse = (score_label(shifted, truth, s, 2.0) for s in ([1.0, 1, 1], [3.0, 1, 1]))
    assert fine["dice"] == coarse["dice"]
    assert coarse["hd95_mm"] == pytest.approx(3 * fine["hd95_mm"]) and coarse["nsd"] < fine["nsd"]


def test_evaluate_teacher_and_student_side_by_side(ct, tmp_path, capsys):
    root, split = ct
    out = tmp_path / "eval"
    args = ["evaluate", "--model", "teacher:litemedsam", "--model", "student:resnet18@64",
            "--data", f"nnunet:{root}", "--split-file", str(split), "--out", str(out)]  # fmt: skip
    assert main(args) == 0
    teacher = json.loads((out / "teacher-litemedsam" / "metrics.json").read_text())
    assert teacher["n_cases"] == 1 and [s["name"] for s in teacher["skipped"]] == ["ct_003"]
    (case,) = teacher["per_case"]
    assert case["name"] == "ct_002" and case["spacing"] == pytest.approx([2.5, 0.8, 0.8])
    assert set(case["labels"]) == set(teacher["per_label"]) == {"liver", "kidney"}
    assert teacher["mean"]["dice"] == pytest.approx(np.mean([v["dice"] for v in case["labels"].values()]))
    assert teacher["mean"]["dice"] > 0.7  # the real bundled teacher, on 40 px slices (0.78 measured)
    text = capsys.readouterr().out
    assert "| teacher:litemedsam | 1 |" in text and "| student:resnet18@64 | 1 |" in text
    assert (out / "comparison.md").is_file() and (out / "teacher-litemedsam" / "per_case.csv").is_file()
    assert main(args) == 2  # results are never overwritten silently


def test_images_spec_is_refused_for_evaluation(tmp_path, capsys):
    (tmp_path / "imgs").mkdir()
    assert main(["evaluate", "--model", "teacher:litemedsam", "--data", f"images:{tmp_path / 'imgs'}",
                 "--out", str(tmp_path / "e")]) == 2  # fmt: skip
    assert "no masks" in capsys.readouterr().err
