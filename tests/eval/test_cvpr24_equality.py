"""LiteMedSAM through kdsam equals the official CVPR24_LiteMedSAM_infer.py (re-implemented step by step
in cvpr24_official.py) on 2D and 3D cases: Dice >= 0.99 per label."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kdsam.data.synthetic import synthesize
from kdsam.eval.metrics import dice
from kdsam.infer.challenge import Case, segment_case
from kdsam.models.loading import load_model
from tests.eval.test_challenge import blob_stack

official = pytest.importorskip("tests.eval.cvpr24_official", reason="the official reference needs OpenCV (cv2)")


def per_label_dice(a: np.ndarray, b: np.ndarray) -> list[float]:
    return [dice(a == i, b == i) for i in range(1, int(b.max()) + 1)]


@pytest.fixture(scope="module")
def litemedsam():
    return load_model("teacher:litemedsam").eval()


def test_2d_case_equals_the_official_script(litemedsam) -> None:
    image, mask = synthesize("polyp", 3)
    image = np.ascontiguousarray(image[:300, :420])  # not square: the resize and padding matter
    ys, xs = np.nonzero(mask[:300, :420])
    boxes = np.array([[xs.min(), ys.min(), xs.max(), ys.max()], [xs.min() + 30, ys.min() + 20, xs.max(), ys.max()]])
    ours = segment_case(litemedsam, Case(Path("case.npz"), image, boxes, None))
    theirs = official.official_2d(litemedsam, image, boxes)
    assert set(np.unique(theirs)) == {0, 1, 2}  # the second box overwrote part of the first
    assert min(per_label_dice(ours, theirs)) >= 0.99


def test_3d_case_equals_the_official_script(litemedsam) -> None:
    imgs, truth = blob_stack(d=3)
    boxes = np.array([[20, 23, 0, 80, 67, 2], [83, 20, 1, 107, 40, 2]])  # the first runs up and down
    ours = segment_case(litemedsam, Case(Path("3DBox.npz"), imgs, boxes, (1.0, 1.0, 1.0)), batch_size=3)
    theirs = official.official_3d(litemedsam, imgs, boxes)
    assert min(per_label_dice(ours, theirs)) >= 0.99
    assert min(per_label_dice(ours, truth)) > 0.8  # and it is a real segmentation
