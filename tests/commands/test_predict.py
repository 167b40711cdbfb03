"""`kdsam predict` through the CLI: a real teacher on a synthetic polyp, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.cli import main
from kdsam.data.imageio import read_image, read_mask, write_png
from kdsam.data.prompts import box_around
from kdsam.data.synthetic import synthesize
from kdsam.eval.metrics import dice
from kdsam.report.overlays import PRED_COLOR


@pytest.fixture
def case(tmp_path: Path) -> tuple[Path, np.ndarray, str]:
    """(image file, true mask, 'X0,Y0,X1,Y1' box around it) for a synthetic polyp."""
    image, mask = synthesize("polyp", 0)
    path = tmp_path / "polyp.png"
    write_png(path, image)
    return path, mask, ",".join(str(int(v)) for v in box_around(mask))


def predict(image: Path, box: str, out: Path, *extra: str) -> int:
    """`kdsam predict` with the bundled LiteMedSAM teacher; returns the exit code."""
    argv = ["predict", "--model", "teacher:litemedsam", "--image", str(image), f"--box={box}", "--out", str(out)]
    return main([*argv, *extra])


def test_predict_writes_mask_and_overlay(case, tmp_path: Path, capsys) -> None:
    image, truth, box = case
    out, overlay = tmp_path / "out" / "mask.png", tmp_path / "overlay.png"
    write_png(overlay, np.zeros((4, 4), np.uint8))  # replaced: --overwrite is given
    assert predict(image, box, out, "--overlay", str(overlay), "--overwrite") == 0
    assert "object pixels" in capsys.readouterr().out
    assert set(np.unique(np.asarray(Image.open(out)))) <= {0, 255}
    assert dice(read_mask(out), truth) > 0.8
    picture = read_image(overlay)
    assert picture.shape == read_image(image).shape and not np.array_equal(picture, read_image(image))


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("10,20,30", "4 numbers"),
        ("a,b,c,d", "4 numbers"),
        ("50,20,30,60", "X0 must be less than X1"),
        ("10,20,30,9999", "outside"),
        ("-5,20,30,60", "outside"),
    ],
)
def test_bad_box_is_one_line(case, tmp_path: Path, capsys, box: str, message: str) -> None:
    assert predict(case[0], box, tmp_path / "mask.png") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and box in err
    assert not (tmp_path / "mask.png").exists()


def test_missing_image_is_one_line(tmp_path: Path, capsys) -> None:
    assert predict(tmp_path / "nope.png", "1,1,5,5", tmp_path / "mask.png") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.png" in err


def test_existing_output_is_kept_without_overwrite(case, tmp_path: Path, capsys) -> None:
    out = tmp_path / "mask.png"
    out.write_bytes(b"keep me")
    assert predict(case[0], case[2], out) == 2
    assert "--overwrite" in capsys.readouterr().err and out.read_bytes() == b"keep me"


def test_points_with_a_box_and_their_overlay(case, tmp_path: Path) -> None:
    image, truth, box = case
    ys, xs = np.nonzero(truth)
    inside, outside = f"{int(xs.mean())},{int(ys.mean())}", "2,2,0"
    out, overlay = tmp_path / "mask.png", tmp_path / "overlay.png"
    assert predict(image, box, out, "--point", inside, f"--point={outside}", "--overlay", str(overlay)) == 0
    assert dice(read_mask(out), truth) > 0.8
    assert json.loads(out.with_suffix(".json").read_text())["points"] == [
        [int(xs.mean()), int(ys.mean()), 1],
        [2, 2, 0],
    ]
    drawn = read_image(overlay)
    assert tuple(drawn[2, 2]) == PRED_COLOR  # the negative click


def test_everything_writes_a_label_map(case, tmp_path: Path) -> None:
    image, _, _ = case
    out = tmp_path / "labels.png"
    argv = ["predict", "--model", "teacher:litemedsam", "--image", str(image), "--out", str(out)]
    assert main([*argv, "--everything", "--points-per-side", "2"]) == 0
    labels = np.asarray(Image.open(out))
    assert labels.shape == read_image(image).shape[:2] and labels.dtype in (np.uint16, np.int32, np.uint8)
    assert "everything" in json.loads(out.with_suffix(".json").read_text())["prompts"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--everything", "--box=1,1,5,5"], "takes no prompt"),
        (["--point", "3,4,2"], "LABEL is 1"),
        (["--point", "3"], "3 numbers"),
        (["--point", "9999,4"], "--point '9999,4' lies outside"),
    ],
)
def test_bad_points_are_one_line(case, tmp_path: Path, capsys, extra: list[str], message: str) -> None:
    image, _, _ = case
    argv = ["predict", "--model", "teacher:litemedsam", "--image", str(image), "--out", str(tmp_path / "m.png")]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
