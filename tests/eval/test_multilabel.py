"""Several structures per image (label maps 1..K in a folder dataset): each label is prompted and
scored on its own, per image and per dataset, and saved predictions keep the labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from kdsam.data import open_dataset
from kdsam.data.imageio import read_labels, write_png
from kdsam.eval.evaluate import ModelSegmenter, PredictionFolder, evaluate


def touching_labels(shape=(48, 64), with_second: bool = True) -> np.ndarray:
    """Label 1 and label 2 side by side, sharing an edge: one blob if the labels were united."""
    labels = np.zeros(shape, np.uint8)
    labels[10:30, 8:30] = 1
    if with_second:
        labels[10:30, 30:50] = 2
    return labels


@pytest.fixture
def labelled_root(tmp_path: Path) -> Path:
    root = tmp_path / "organs"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, second in (("case_a", True), ("case_b", False)):
        Image.fromarray(rng.integers(0, 255, (48, 64, 3), np.uint8)).save(root / "images" / f"{name}.png")
        write_png(root / "masks" / f"{name}.png", touching_labels(with_second=second))
    return root


def test_samples_keep_their_labels(labelled_root: Path) -> None:
    dataset = open_dataset(f"folder:{labelled_root}")
    a = dataset[dataset.names.index("case_a")]
    assert a.labels is not None and set(np.unique(a.labels)) == {0, 1, 2}
    assert np.array_equal(a.mask, a.labels > 0)
    assert [k for k, _ in a.by_label()] == [1, 2]
    small = open_dataset(f"folder:{labelled_root}", max_side=32)[dataset.names.index("case_a")]
    assert small.labels is not None and set(np.unique(small.labels)) == {0, 1, 2}  # nearest, labels kept


def test_each_label_scored_on_its_own(labelled_root: Path, tmp_path: Path) -> None:
    preds = tmp_path / "preds"
    truth = touching_labels()
    swapped = np.where(truth == 1, 2, np.where(truth == 2, 1, 0)).astype(np.uint8)
    write_png(preds / "case_a.png", swapped)  # the union is perfect, every label is wrong
    write_png(preds / "case_b.png", touching_labels(with_second=False))
    result = evaluate(PredictionFolder(preds), open_dataset(f"folder:{labelled_root}"), progress=False)
    rows = {r["name"]: r for r in result["per_image"]}
    assert rows["case_a"]["label1_dice"] == 0.0 and rows["case_a"]["label2_dice"] == 0.0
    assert rows["case_a"]["dice"] == 0.0 and rows["case_a"]["n_labels"] == 2
    assert rows["case_b"]["dice"] == 1.0 and "label2_dice" not in rows["case_b"]
    per_label = result["per_label"]
    assert per_label["1"]["n_images"] == 2 and per_label["1"]["mean"]["dice"] == 0.5
    assert per_label["2"]["n_images"] == 1 and per_label["2"]["mean"]["dice"] == 0.0
    assert "label1_dice" not in result["mean"] and result["mean"]["dice"] == 0.5


class BoxFiller:
    """A predictor stand-in that fills each box: counts how often an image is embedded."""

    def __init__(self) -> None:
        self.embedded = 0
        self.shape: tuple[int, int] = (0, 0)

    def set_image(self, image: np.ndarray) -> None:
        self.embedded += 1
        self.shape = image.shape[:2]

    def segment(self, boxes: np.ndarray) -> np.ndarray:
        out = np.zeros(self.shape, bool)
        for x0, y0, x1, y1 in boxes.astype(int):
            out[y0:y1, x0:x1] = True
        return out


def test_model_prompts_each_label_once_per_image_embedding(labelled_root: Path, tmp_path: Path) -> None:
    predictor = BoxFiller()
    saved = tmp_path / "saved"
    result = evaluate(
        ModelSegmenter(predictor, "boxes"),  # type: ignore[arg-type]
        open_dataset(f"folder:{labelled_root}"),
        save_predictions=saved,
        progress=False,
    )
    assert predictor.embedded == 2  # two images, three labels
    rows = {r["name"]: r for r in result["per_image"]}
    assert rows["case_a"]["label1_dice"] == 1.0 and rows["case_a"]["label2_dice"] == 1.0
    assert rows["case_a"]["n_boxes"] == 2  # one box per label, though the union is one blob
    assert np.array_equal(read_labels(saved / "case_a.png"), touching_labels())


def test_cli_prints_each_label(labelled_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from kdsam.cli import main

    preds = tmp_path / "preds"
    for name, second in (("case_a", True), ("case_b", False)):
        write_png(preds / f"{name}.png", touching_labels(with_second=second))
    args = ["evaluate", "--predictions", str(preds), "--data", f"folder:{labelled_root}", "--split", "all"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "label 1: Dice 1.0000 over 2 images" in out and "label 2: Dice 1.0000 over 1 images" in out
    assert "Dice label 1 |" in out and "Dice label 2 |" in out  # the side-by-side table has a column each


def test_a_prompt_protocol_never_changes_the_segmenter_given(tmp_path: Path) -> None:
    from kdsam.errors import KdsamError
    from kdsam.eval.evaluate import with_protocol

    given = ModelSegmenter(BoxFiller(), "boxes")  # type: ignore[arg-type]
    clicks = with_protocol(given, "clicks:3")
    assert clicks is not given and clicks.predictor is given.predictor  # type: ignore[attr-defined]
    assert (given.protocol.name, clicks.protocol.name) == ("box", "clicks:3")  # type: ignore[attr-defined]
    assert with_protocol(given, "box") is given
    tmp_path.joinpath("preds").mkdir()
    with pytest.raises(KdsamError, match="saved predictions take no prompts"):
        with_protocol(PredictionFolder(tmp_path / "preds"), "point")
