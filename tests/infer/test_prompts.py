"""One rule for prompts: the bounds of boxes and clicks, and the same prompts giving the same mask
through the REST API, `kdsam predict` and the Python predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient

import kdsam
from kdsam.cli import main
from kdsam.data.imageio import read_mask, write_png
from kdsam.data.synthetic import synthesize
from kdsam.infer.prompts import PromptError, check_boxes, check_points, is_ambiguous, one_box
from kdsam.models.loading import save_model
from kdsam.models.student import build_student
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from tests.serve.conftest import decode_png, png_bytes

SHAPE = (40, 60)  # H, W


@pytest.mark.parametrize("box", [[0, 0, 60, 40], [10.5, 3, 11, 4]])
def test_boxes_on_pixel_edges_up_to_the_image_size_are_inside(box: list[float]) -> None:
    assert check_boxes([box], SHAPE).tolist() == [box]


@pytest.mark.parametrize(
    ("box", "words"),
    [
        ([0, 0, 60.5, 40], "reaches outside the 60x40 image"),
        ([-1, 0, 10, 10], "reaches outside"),
        ([5, 5, 5, 9], "X0 must be less than X1"),
        ([np.nan, 0, 5, 5], "X0 must be less than X1"),
    ],
)
def test_a_box_off_the_image_is_one_line(box: list[float], words: str) -> None:
    with pytest.raises(PromptError, match=words):
        check_boxes([box], SHAPE, ["--box 'typed'"])


@pytest.mark.parametrize("point", [[0, 0], [59.5, 39.9]])
def test_clicks_on_a_pixel_are_inside(point: list[float]) -> None:
    points, labels = check_points([point], [1], SHAPE)
    assert points.tolist() == [pytest.approx(point)] and labels.tolist() == [1]


@pytest.mark.parametrize(("point", "label"), [([60, 5], 1), ([5, 40], 1), ([-0.5, 5], 1), ([5, 5], 2)])
def test_a_click_off_the_image_or_mislabelled_is_one_line(point: list[float], label: int) -> None:
    with pytest.raises(PromptError, match=r"outside the 60x40 image|label is 1"):
        check_points([point], [label], SHAPE)


def test_clicks_describe_one_object() -> None:
    assert one_box(np.zeros((0, 4))) is None
    with pytest.raises(PromptError, match="at most one box"):
        one_box(np.zeros((2, 4)))


def test_only_a_lone_click_is_ambiguous() -> None:
    assert is_ambiguous(1, has_box=False, has_mask=False)
    assert not is_ambiguous(2, has_box=False, has_mask=False)
    assert not is_ambiguous(1, has_box=True, has_mask=False)
    assert not is_ambiguous(1, has_box=False, has_mask=True)


BOX = [113, 143, 219, 219]  # around synthesize("polyp", 3)'s polyp
CASES = {
    "box": ([BOX], []),
    "lone click": ([], [[166, 181, 1]]),
    "box and clicks": ([BOX], [[166, 181, 1], [116, 146, 0]]),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Random weights (seed 3) whose masks for CASES are neither empty nor the whole image, and whose
    single mask for the lone click differs from its best of three: a wrong choice shows."""
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    torch.manual_seed(3)
    save_model(build_student(None, "resnet18", 64), path)
    return str(path)


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return synthesize("polyp", 3)[0]


@pytest.fixture(scope="module")
def predictor(model: str, image: np.ndarray) -> Any:
    predictor = kdsam.load_predictor(model, "cpu")
    predictor.set_image(image)
    return predictor


@pytest.fixture(scope="module")
def client(model: str) -> TestClient:
    return TestClient(create_app(Engine(kdsam.load_predictor(model, "cpu"))))


def _python(predictor: Any, boxes: list, points: list, multimask: bool) -> np.ndarray:
    """SAM's own API, as SAM's README uses it (`multimask` for a lone click), the best scored mask."""
    clicks = np.array(points, np.float32).reshape(-1, 3)
    masks, scores, _ = predictor.predict(
        point_coords=clicks[:, :2] if len(clicks) else None,
        point_labels=clicks[:, 2] if len(clicks) else None,
        box=np.array(boxes[0], np.float32) if boxes else None,
        multimask_output=multimask,
    )
    return masks[int(np.argmax(scores))]


def _cli(model: str, image: Path, out: Path, boxes: list, points: list) -> np.ndarray:
    prompts = [f"--box={','.join(map(str, b))}" for b in boxes] + [f"--point={','.join(map(str, p))}" for p in points]
    argv = ["predict", "--model", model, "--device", "cpu", "--image", str(image), "--out", str(out)]
    assert main([*argv, *prompts]) == 0
    return read_mask(out)


def _api(client: TestClient, data: bytes, boxes: list, points: list) -> np.ndarray:
    sid = client.post("/v1/sessions", files={"image": ("polyp.png", data)}).json()["session_id"]
    body = {"boxes": boxes, "points": [p[:2] for p in points], "point_labels": [p[2] for p in points]}
    response = client.post(f"/v1/sessions/{sid}/segment", json=body)
    assert response.status_code == 200, response.text
    (mask,) = response.json()["masks"]
    return decode_png(mask["png"])


@pytest.mark.parametrize("case", CASES)
def test_the_api_the_cli_and_the_predictor_give_the_same_mask(
    model: str, image: np.ndarray, predictor: Any, client: TestClient, tmp_path: Path, case: str
) -> None:
    boxes, points = CASES[case]
    lone_click = not boxes and len(points) == 1
    want = _python(predictor, boxes, points, multimask=lone_click)
    assert want.any() and not want.all()
    if lone_click:
        assert (want != _python(predictor, boxes, points, multimask=False)).any()  # the choice matters here
    path = tmp_path / "polyp.png"
    write_png(path, image)
    np.testing.assert_array_equal(_cli(model, path, tmp_path / "mask.png", boxes, points), want)
    np.testing.assert_array_equal(_api(client, png_bytes(image), boxes, points), want)
