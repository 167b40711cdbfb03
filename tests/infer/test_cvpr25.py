"""CVPR25 cases: reading and refusing them, the interactive rule on a stand-in model whose answers
are known, the slice embeddings kept across calls, and `kdsam predict --input` answering each call."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdsam.cli import main
from kdsam.errors import BadFileError
from kdsam.infer.cvpr25 import is_cvpr25_file, read_case25
from kdsam.infer.interactive3d import answer_case25
from kdsam.models.loading import save_model
from kdsam.models.student import build_student
from tests.infer.fake_slices import FakeSlices

D, SIDE = 12, 48


def volume() -> tuple[np.ndarray, np.ndarray]:
    """Object A (class 1, slices 2-9), a bright distractor B beside it (slices 4-7, no class) and
    object C (class 2, slices 3-6) elsewhere."""
    imgs = np.full((D, SIDE, SIDE), 40, np.uint8)
    gts = np.zeros(imgs.shape, np.uint8)
    imgs[2:10, 10:26, 10:26], gts[2:10, 10:26, 10:26] = 200, 1
    imgs[4:8, 10:26, 29:35] = 200
    imgs[3:7, 35:45, 35:45], gts[3:7, 35:45, 35:45] = 200, 2
    return imgs, gts


BOX_A = {"z_min": 2, "z_max": 9, "z_mid": 5, "z_mid_x_min": 8, "z_mid_y_min": 8, "z_mid_x_max": 37, "z_mid_y_max": 28}
BOX_C = {"z_min": 3, "z_max": 6, "z_mid": 4, "z_mid_x_min": 35, "z_mid_y_min": 35, "z_mid_x_max": 45, "z_mid_y_max": 45}


def write(path: Path, **arrays) -> Path:
    np.savez_compressed(path, **arrays)
    return path


def click_step(path: Path, imgs: np.ndarray, segs: np.ndarray) -> Path:
    """The case as the evaluator rewrites it for the next call: BOX_A, one object click, the answer."""
    clicks = [{"fg": [[5, 12, 12]], "bg": []}]
    return write(
        path, imgs=imgs, spacing=[1.0] * 3, boxes=[BOX_A], clicks=clicks, clicks_order=[["fg"]], prev_pred=segs
    )


def test_boxes_then_a_background_click(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KDSAM_CACHE", str(tmp_path / "cache"))
    imgs, gts = volume()
    fake = FakeSlices(SIDE)
    case = write(tmp_path / "CT_a.npz", imgs=imgs, spacing=[1.0] * 3, boxes=[BOX_A, BOX_C])
    assert is_cvpr25_file(case)
    answer_case25(fake, case, tmp_path / "s0.npz")
    segs = np.load(tmp_path / "s0.npz")["segs"]
    assert segs.dtype == np.uint8 and segs.shape == imgs.shape
    assert (segs[4:8, 10:26, 29:35] == 1).all() and (segs[gts > 0] == gts[gts > 0]).all()  # the box took B too
    assert len(fake.embedded) == 8  # slices 2..9, each once for both classes

    # the evaluator's next call, a new process: a background click on B (slice 5), none for class 2
    clicks = [{"fg": [], "bg": [[5, 15, 31]]}, {"fg": [], "bg": []}]
    fake = FakeSlices(SIDE)
    write(
        case,
        imgs=imgs,
        spacing=[1.0] * 3,
        boxes=[BOX_A, BOX_C],
        clicks=clicks,
        clicks_order=[["bg"], [None]],
        prev_pred=segs,
    )
    record = answer_case25(fake, case, tmp_path / "s1.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "s1.npz")["segs"], gts)  # B gone from every slice
    assert record["clicks"] == [1, 0] and record["previous_answer"]
    assert fake.embedded == []  # every slice's embedding came from the cache folder


def test_an_object_click_alone_finds_the_object(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KDSAM_CACHE", str(tmp_path / "cache"))
    imgs, gts = volume()
    clicks = [{"fg": [[4, 40, 40]], "bg": []}]
    case = write(
        tmp_path / "CT_c.npz",
        imgs=imgs,
        spacing=[1.0] * 3,
        clicks=clicks,
        clicks_order=[["fg"]],
        prev_pred=np.zeros_like(imgs),
    )
    answer_case25(FakeSlices(SIDE), case, tmp_path / "s.npz")
    np.testing.assert_array_equal(np.load(tmp_path / "s.npz")["segs"], (gts == 2).astype(np.uint8))


@pytest.mark.parametrize(
    "change, message",
    [
        ({"clicks": [{"fg": [[D, 1, 1]], "bg": []}]}, "outside the volume"),
        ({"clicks": [{"fg": [[1, 1]], "bg": []}]}, "a click is \\[z, y, x\\]"),
        ({"clicks": [{"fg": [], "bg": []}, {"fg": [[1, 1, 1]], "bg": []}]}, "2 classes but boxes only 1"),
        ({"prev_pred": np.zeros((D, SIDE, SIDE - 1), np.uint8)}, "prev_pred has shape"),
        ({"boxes": [{**BOX_A, "z_min": 7, "z_max": 3}]}, "z_min 7 > z_max 3"),
        ({"boxes": [{**BOX_A, "z_mid_x_max": SIDE + 5}]}, "not inside the 48x48 slices"),
        ({"boxes": [{k: v for k, v in BOX_A.items() if k != "z_mid"}]}, "must be a dict with"),
        ({"clicks": [{"fg": [[1, 1, 1]], "bg": []}], "clicks_order": [["bg"]]}, "does not match"),
    ],
)
def test_bad_cases_are_one_line(tmp_path: Path, change: dict, message: str) -> None:
    imgs, _ = volume()
    arrays = {"imgs": imgs, "spacing": [1.0] * 3, "boxes": [BOX_A], **change}
    with pytest.raises(BadFileError, match=message) as err:
        read_case25(write(tmp_path / "CT_bad.npz", **arrays))
    assert "\n" not in str(err.value) and "CT_bad.npz" in str(err.value)


def test_predict_answers_every_call_and_skips_bad_cases(tmp_path: Path, monkeypatch, capsys) -> None:
    """The evaluator's loop: predict, add a click and prev_pred, predict again into the same folder."""
    monkeypatch.setenv("KDSAM_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "tiny.pt"
    save_model(build_student(None, "resnet18", 64), model)
    imgs, _ = volume()
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    write(inputs / "CT_a.npz", imgs=imgs, spacing=[1.0] * 3, boxes=[BOX_A])
    write(inputs / "MR_bad.npz", imgs=imgs, spacing=[1.0] * 3, boxes=[{**BOX_A, "z_min": 9, "z_max": 2}])
    write(inputs / "2DBox_x.npz", imgs=np.repeat(imgs[5][..., None], 3, 2), boxes=np.array([[8, 8, 30, 30]]))
    command = ["predict", "--model", str(model), "--input", str(inputs), "--out", str(outputs)]
    assert main(command) == 1  # one case failed
    err = capsys.readouterr().err
    assert "MR_bad.npz: boxes[0]: z_min 9 > z_max 2" in err
    assert sorted(p.name for p in outputs.glob("*.npz")) == ["2DBox_x.npz", "CT_a.npz"]
    segs = np.load(outputs / "CT_a.npz")["segs"]
    assert segs.shape == imgs.shape and segs.dtype == np.uint8
    (inputs / "MR_bad.npz").unlink()
    click_step(inputs / "CT_a.npz", imgs, segs)
    before = (outputs / "CT_a.npz").stat().st_mtime_ns, (outputs / "2DBox_x.npz").stat().st_mtime_ns
    assert main(command) == 0
    assert (outputs / "CT_a.npz").stat().st_mtime_ns != before[0]  # answered afresh
    assert (outputs / "2DBox_x.npz").stat().st_mtime_ns == before[1]  # a CVPR24 case is still skipped
    assert "1 segmented, 1 already done" in capsys.readouterr().out
