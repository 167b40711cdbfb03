"""ONNX export of a tiny student, checked by onnx.checker and against the PyTorch predictor."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from kdsam.cli import main
from kdsam.data.synthetic import synthesize
from kdsam.errors import KdsamError
from kdsam.export.onnx import CONFIG_FILE, DECODER_FILE, ENCODER_FILE, preprocessing_config
from kdsam.export.onnx_predictor import OnnxPredictor, postprocess_masks, preprocess
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student
from kdsam.models.transforms import resize_transform
from kdsam.predictor import KDSamPredictor

SIZE = 128
BOXES = np.array([[90.0, 60.0, 260.0, 230.0], [0.0, 0.0, 120.0, 100.0], [200.0, 150.0, 340.0, 280.0]])


@pytest.fixture(scope="module")
def student() -> KDSam:
    torch.manual_seed(0)
    return build_student(None, "resnet18", SIZE).eval()


@pytest.fixture(scope="module")
def exported(student: KDSam, tmp_path_factory) -> Path:
    """`kdsam export` of the saved student: the folder it wrote."""
    root = tmp_path_factory.mktemp("onnx")
    save_model(student, root / "model.pt")
    assert main(["export", "--model", str(root / "model.pt"), "--out", str(root / "export")]) == 0
    return root / "export"


@pytest.fixture(scope="module")
def predictors(student: KDSam, exported: Path) -> tuple[KDSamPredictor, OnnxPredictor]:
    image, _ = synthesize("polyp", 0)
    torch_predictor, onnx_predictor = KDSamPredictor(student), OnnxPredictor(exported)
    torch_predictor.set_image(image)
    onnx_predictor.set_image(image)
    return torch_predictor, onnx_predictor


def test_export_writes_two_checked_graphs_and_the_preprocessing(exported: Path) -> None:
    assert sorted(p.name for p in exported.iterdir()) == sorted([CONFIG_FILE, DECODER_FILE, ENCODER_FILE])
    for name in (ENCODER_FILE, DECODER_FILE):
        onnx.checker.check_model(str(exported / name), full_check=True)
    boxes = onnx.load(str(exported / DECODER_FILE)).graph.input[1]
    assert boxes.name == "boxes" and boxes.type.tensor_type.shape.dim[0].dim_param  # any number of boxes
    config = json.loads((exported / CONFIG_FILE).read_text())
    assert config["img_size"] == SIZE and config["opset"] == 17
    assert (config["normalization"], config["resize_mode"]) == ("imagenet", "longest")
    np.testing.assert_allclose(config["pixel_mean"], [123.675, 116.28, 103.53])
    np.testing.assert_allclose(config["pixel_std"], [58.395, 57.12, 57.375])


def test_onnx_predictor_matches_the_pytorch_predictor(predictors) -> None:
    torch_predictor, onnx_predictor = predictors
    np.testing.assert_allclose(
        onnx_predictor.get_image_embedding(), torch_predictor.get_image_embedding().numpy(), atol=1e-4, rtol=1e-4
    )
    # The decoder's box axis is dynamic; full-size logits check the upsampling and cropping too (a
    # random decoder's masks may be all foreground, so agreeing masks alone would prove little).
    for boxes, logits in ((BOXES, False), (BOXES[1:2], True)):
        want = torch_predictor.predict_boxes(boxes, return_logits=logits)
        got = onnx_predictor.predict_boxes(boxes, return_logits=logits)
        assert [a.shape for a in got] == [a.shape for a in want]
        if logits:
            np.testing.assert_allclose(got[0], want[0], atol=1e-4)
        else:
            assert got[0].dtype == bool and (got[0] == want[0]).mean() > 0.99
        np.testing.assert_allclose(got[1], want[1], atol=1e-4)
        np.testing.assert_allclose(got[2], want[2], atol=1e-4)
    assert (onnx_predictor.segment(BOXES) == torch_predictor.segment(BOXES)).mean() > 0.99


@pytest.mark.parametrize(
    ("normalization", "resize_mode", "recipe"),
    [
        ("imagenet", "longest", "sam"),
        ("minmax", "squash", "sam"),
        ("minmax", "longest", "litemedsam"),
        ("minmax", "squash", "medsam"),
    ],
)
def test_numpy_preprocessing_matches_the_model(
    student: KDSam, normalization: str, resize_mode: str, recipe: str
) -> None:
    """Also with a teacher's official recipe (an exported LiteMedSAM or MedSAM): image, boxes and masks."""
    model = KDSam(student, name="variant", normalization=normalization, resize_mode=resize_mode, recipe=recipe)
    image, _ = synthesize("skin", 1)
    want, resized = model.prepare(image)
    config = preprocessing_config(model, 17)
    transform = resize_transform(config["resize_mode"], config["img_size"], config["recipe"])
    got = preprocess(transform.apply_image(image), config)
    assert got.shape == (1, 3, SIZE, SIZE) and resized == transform.apply_image(image).shape[:2]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    size = image.shape[:2]
    want_boxes = model.boxes_to_prompt_frame(torch.as_tensor(BOXES), size).numpy()
    np.testing.assert_allclose(transform.apply_boxes(BOXES, size), want_boxes, rtol=1e-6)
    low_res = torch.randn(2, 1, 256, 256)
    want_masks = model.postprocess_masks(low_res, resized, size).numpy()
    np.testing.assert_array_equal(postprocess_masks(low_res.numpy(), SIZE, resized, size, config["recipe"]), want_masks)


def test_onnx_predictor_errors(predictors, exported: Path, tmp_path: Path) -> None:
    with pytest.raises(KdsamError, match="no ONNX export"):
        OnnxPredictor(tmp_path)
    _, onnx_predictor = predictors
    with pytest.raises(ValueError, match="single-mask"):
        onnx_predictor.predict_boxes(BOXES, multimask_output=True)
    fresh = OnnxPredictor(exported)
    with pytest.raises(RuntimeError, match="set_image"):
        fresh.predict_boxes(BOXES)


def test_export_refuses_to_overwrite(exported: Path, capsys) -> None:
    assert main(["export", "--model", "unused", "--out", str(exported)]) == 2
    assert "--overwrite" in capsys.readouterr().err
