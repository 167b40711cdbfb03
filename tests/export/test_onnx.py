"""ONNX export of a tiny student, checked by onnx.checker and against the PyTorch predictor."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from segment_anything.modeling.common import LayerNorm2d as SamLayerNorm2d

from kdsam.cli import main
from kdsam.data.synthetic import synthesize
from kdsam.errors import KdsamError
from kdsam.export.layout import (
    CONFIG_FILE,
    DECODER_FILE,
    ENCODER_FILE,
    INT8_DECODER_FILE,
    INT8_ENCODER_FILE,
    INT8_PROMPT_DECODER_FILE,
    PROMPT_DECODER_FILE,
)
from kdsam.export.onnx import export_onnx, preprocessing_config
from kdsam.export.onnx_predictor import (
    OnnxPredictor,
    is_export,
    load_export,
    postprocess_masks,
    prepare_image,
)
from kdsam.export.quantize import calibration_from, synthetic_calibration
from kdsam.models.loading import save_model
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student
from kdsam.models.transforms import resize_transform
from kdsam.predictor import KDSamPredictor, Predictor

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


def test_export_writes_two_checked_graphs_and_the_preprocessing(student: KDSam, exported: Path) -> None:
    graphs = [ENCODER_FILE, DECODER_FILE, PROMPT_DECODER_FILE, INT8_ENCODER_FILE, INT8_DECODER_FILE]
    graphs.append(INT8_PROMPT_DECODER_FILE)
    assert sorted(p.name for p in exported.iterdir()) == sorted([CONFIG_FILE, *graphs])
    for name in graphs:
        onnx.checker.check_model(str(exported / name), full_check=True)
    boxes = onnx.load(str(exported / DECODER_FILE)).graph.input[1]
    assert boxes.name == "boxes" and boxes.type.tensor_type.shape.dim[0].dim_param  # any number of boxes
    config = json.loads((exported / CONFIG_FILE).read_text())
    assert config["img_size"] == SIZE and config["opset"] == 17 and config["external_data"] is False
    int8 = config["int8"]
    assert int8["encoder"] == INT8_ENCODER_FILE and "synthetic" in int8["calibration"]
    assert (int8["decoder"], int8["prompt_decoder"]) == (INT8_DECODER_FILE, INT8_PROMPT_DECODER_FILE)
    assert (config["normalization"], config["resize_mode"]) == ("imagenet", "longest")
    np.testing.assert_allclose(config["pixel_mean"], [123.675, 116.28, 103.53])
    np.testing.assert_allclose(config["pixel_std"], [58.395, 57.12, 57.375])
    assert config["card"] == student.card == OnnxPredictor(exported).card  # so predict maps volumes as trained


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
    "points, labels, box, with_mask",
    [
        ([[40.0, 50.0]], [1], None, False),  # a lone click: best of three
        ([[40.0, 50.0], [70.0, 20.0]], [1, 0], [10.0, 12.0, 90.0, 100.0], True),
        ([], [], [10.0, 12.0, 90.0, 100.0], False),  # a box alone, as SAM's prompt encoder embeds it
        ([[64.0, 64.0], [3.0, 5.0], [100.0, 90.0]], [0, 1, 1], None, True),
    ],
)
def test_prompt_decoder_matches_sam_prompt_encoder(predictors, points, labels, box, with_mask) -> None:
    """The exported clicks+box+mask graph answers as SAM's own prompt encoder and mask decoder."""
    from kdsam.infer.volume import FramePrompt, TorchSlices

    torch_predictor, onnx_predictor = predictors
    rng = np.random.default_rng(0)
    mask = rng.normal(0, 4, (256, 256)).astype(np.float32) if with_mask else None
    prompt = FramePrompt(np.array(points, np.float32).reshape(-1, 2), np.array(labels), box and np.array(box), mask)
    embedding = onnx_predictor.features
    sizes = (onnx_predictor.input_size, onnx_predictor.original_size)
    ours = onnx_predictor.slices().decode_prompts(embedding, prompt, *sizes)
    theirs = TorchSlices(torch_predictor.model).decode_prompts(torch.from_numpy(embedding), prompt, *sizes)
    np.testing.assert_allclose(ours.logits, theirs.logits, atol=2e-4)
    assert abs(ours.score - theirs.score) < 1e-4 and (ours.mask != theirs.mask).mean() < 1e-3


@pytest.mark.parametrize(
    "points, labels, box, multimask",
    [
        ([[40.0, 50.0]], [1], None, True),  # a lone click: SAM's three masks
        ([[40.0, 50.0], [70.0, 20.0]], [1, 0], [10.0, 12.0, 90.0, 100.0], False),
        (None, None, [10.0, 12.0, 90.0, 100.0], False),  # a box alone
    ],
)
def test_onnx_predict_is_sam_predict(predictors, points, labels, box, multimask) -> None:
    """`predict` (SAM's API, in original pixels) answers on an export as on the torch model, so
    callers hold a `Predictor` and never ask which."""
    torch_predictor, onnx_predictor = predictors
    assert isinstance(torch_predictor, Predictor) and isinstance(onnx_predictor, Predictor)
    prompts = {
        "point_coords": None if points is None else np.array(points),
        "point_labels": None if labels is None else np.array(labels),
        "box": None if box is None else np.array(box),
        "multimask_output": multimask,
    }
    want = torch_predictor.predict(**prompts, return_logits=True)
    got = onnx_predictor.predict(**prompts, return_logits=True)
    assert [a.shape for a in got] == [a.shape for a in want]
    for ours, theirs in zip(got, want, strict=True):
        np.testing.assert_allclose(ours, theirs, atol=2e-4)
    again = onnx_predictor.predict(**prompts, mask_input=got[2][:1])  # a next step's mask prompt
    assert again[0].dtype == bool and again[0].shape == want[0].shape


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
    got, got_resized = prepare_image(image, config)  # what OnnxPredictor.set_image runs
    assert got.shape == (1, 3, SIZE, SIZE) and resized == got_resized == transform.apply_image(image).shape[:2]
    np.testing.assert_allclose(got, want.numpy(), atol=1e-5)
    grey = image[..., 1]  # a grey slice is resized before it is made RGB, to the same pixels
    rgb = np.repeat(grey[..., None], 3, axis=2)
    np.testing.assert_array_equal(model.prepare(grey)[0], model.prepare(rgb)[0])
    np.testing.assert_array_equal(prepare_image(grey, config)[0], prepare_image(rgb, config)[0])
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


def test_an_export_without_a_prompt_decoder_answers_a_click_with_a_one_line_400(exported: Path, tmp_path: Path) -> None:
    """Exports made before the prompt decoder still serve boxes; a click says how to get one."""
    from fastapi.testclient import TestClient

    from kdsam.serve.app import create_app
    from kdsam.serve.engine import Engine

    old = tmp_path / "old"
    shutil.copytree(exported, old)
    config = json.loads((old / CONFIG_FILE).read_text())
    del config["prompt_decoder"]
    (old / CONFIG_FILE).write_text(json.dumps(config))
    (old / PROMPT_DECODER_FILE).unlink()
    client = TestClient(create_app(Engine(OnnxPredictor(old))))
    png = io.BytesIO()
    Image.fromarray(synthesize("polyp", 0)[0]).save(png, format="PNG")
    sid = client.post("/v1/sessions", files={"image": ("a.png", png.getvalue(), "image/png")}).json()["session_id"]
    assert client.post(f"/v1/sessions/{sid}/segment", json={"boxes": BOXES[:1].tolist()}).status_code == 200
    clicked = client.post(f"/v1/sessions/{sid}/segment", json={"points": [[40, 50]], "point_labels": [1]})
    assert clicked.status_code == 400
    assert clicked.json() == {"error": f"{old}: this export has no prompt decoder for clicks (rerun `kdsam export`)"}


def test_export_refuses_to_overwrite(exported: Path, capsys) -> None:
    assert main(["export", "--model", "unused", "--out", str(exported)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _int8_ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


def test_int8_encoder_is_quantized_and_close_to_fp32(predictors, exported: Path) -> None:
    assert {"QuantizeLinear", "DequantizeLinear"} <= _int8_ops(exported / INT8_ENCODER_FILE)
    assert "Identity" not in _int8_ops(exported / INT8_ENCODER_FILE)  # folded, so every conv has an int bias
    _, fp32 = predictors
    int8 = load_export(exported, "onnxruntime-int8")
    assert int8.runtime == "onnxruntime-int8" and is_export(exported)
    int8.set_image(synthesize("polyp", 0)[0])
    a, b = fp32.get_image_embedding(), int8.get_image_embedding()
    assert np.abs(a - b).mean() < 0.15 * np.abs(a).mean() and not np.array_equal(a, b)
    assert (int8.segment(BOXES) == fp32.segment(BOXES)).mean() > 0.95


def test_layer_norms_are_one_operator_in_every_graph(student: KDSam, exported: Path) -> None:
    """SAM's LayerNorm2d as mean/variance arithmetic over channels cost 19 % of an INT8 encoder."""
    for name in (ENCODER_FILE, DECODER_FILE, PROMPT_DECODER_FILE):
        ops = _int8_ops(exported / name)
        assert "LayerNormalization" in ops and "ReduceMean" not in ops, name
    assert type(student.mask_decoder.output_upscaling[1]) is SamLayerNorm2d  # the model is as it was


def test_int8_decoders_quantize_the_image_token_projections_only(predictors, exported: Path, tmp_path: Path) -> None:
    for name in (INT8_DECODER_FILE, INT8_PROMPT_DECODER_FILE):
        nodes = onnx.load(str(exported / name)).graph.node
        quantized = [n.name for n in nodes if n.op_type == "MatMulInteger"]
        assert len(quantized) == 10 and all("_proj/" in n for n in quantized), name
        assert any(n.op_type == "MatMul" and "pe_layer" in n.name for n in nodes)  # prompt positions stay fp32
    _, fp32 = predictors
    embedding, frame = fp32.get_image_embedding(), fp32.transform.apply_boxes(BOXES, fp32.original_size)
    size = fp32.input_size, fp32.original_size
    want, _, want_low = fp32.decode(embedding, frame.astype(np.float32), *size)
    got, _, got_low = load_export(exported, "onnxruntime-int8").decode(embedding, frame.astype(np.float32), *size)
    assert not np.array_equal(got_low, want_low)  # the INT8 decoder ran
    assert ((got > 0) == (want > 0)).mean() > 0.98
    # an export made before the INT8 decoders runs its fp32 decoders under onnxruntime-int8
    shutil.copytree(exported, tmp_path / "old")
    config = json.loads((tmp_path / "old" / CONFIG_FILE).read_text())
    config["int8"] = {k: v for k, v in config["int8"].items() if k == "encoder"}
    (tmp_path / "old" / CONFIG_FILE).write_text(json.dumps(config))
    old = load_export(tmp_path / "old", "onnxruntime-int8")
    np.testing.assert_array_equal(old.decode(embedding, frame.astype(np.float32), *size)[2], want_low)


def test_external_data_export_runs_like_the_single_file(student: KDSam, predictors, tmp_path: Path) -> None:
    """The >2 GB path (ViT-H), forced on a small model: weights in FILE.data, fp32 and INT8."""
    config = export_onnx(student, tmp_path, external_data=True, calibration=synthetic_calibration(2))
    assert config["external_data"] and (tmp_path / f"{ENCODER_FILE}.data").stat().st_size > 1e6
    assert (tmp_path / ENCODER_FILE).stat().st_size < 1e6  # the graph only
    assert (tmp_path / f"{INT8_ENCODER_FILE}.data").stat().st_mode == (tmp_path / INT8_ENCODER_FILE).stat().st_mode
    image = synthesize("polyp", 0)[0]
    _, single = predictors
    for runtime in ("onnxruntime", "onnxruntime-int8"):
        predictor = load_export(tmp_path, runtime)
        predictor.set_image(image)
        if runtime == "onnxruntime":
            np.testing.assert_allclose(predictor.get_image_embedding(), single.get_image_embedding(), atol=1e-5)
    assert predictor.predict_boxes(BOXES)[0].shape == (3, 1, *image.shape[:2])


def test_calibration_data_from_a_folder_of_images(tmp_path: Path) -> None:
    from kdsam.data.imageio import write_png

    for i in range(3):
        write_png(tmp_path / f"img{i}.png", synthesize("skin", i)[0])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    calibration = calibration_from(str(tmp_path), 2)
    assert len(calibration.images) == 2 and str(tmp_path) in calibration.source
    (tmp_path / "empty").mkdir()
    with pytest.raises(KdsamError, match="no readable image"):
        calibration_from(str(tmp_path / "empty"), 2)


def test_int8_runtime_needs_an_int8_export(student: KDSam, tmp_path: Path) -> None:
    export_onnx(student, tmp_path)  # no calibration: fp32 graphs only
    with pytest.raises(KdsamError, match="no INT8 encoder"):
        load_export(tmp_path, "onnxruntime-int8")
    with pytest.raises(KdsamError, match="runs under"):
        load_export(tmp_path, "tensorrt")


def test_volumes_and_challenge_cases_run_on_the_export(student: KDSam, exported: Path, tmp_path: Path) -> None:
    """The 3D protocol and 2D cases on onnxruntime (fp32 and INT8) give the PyTorch model's labels."""
    from kdsam.infer.challenge import labels_2d
    from kdsam.infer.volume import segment_stack

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 60, (6, 80, 96), dtype=np.uint8)
    stack[:, 20:60, 30:70] += 150
    boxes3d = np.array([[30, 20, 1, 69, 59, 4]])
    want = segment_stack(student, stack, boxes3d, batch_size=4)
    got = segment_stack(OnnxPredictor(exported), stack, boxes3d, batch_size=4)
    assert got.shape == want.shape and got.dtype == np.uint8
    assert (got == want).mean() > 0.99 and set(np.unique(want)) <= {0, 1}
    from concurrent.futures import ThreadPoolExecutor

    from kdsam.infer.volume import SliceEmbeddings, check_box3d, segment_box3d

    slices, box = OnnxPredictor(exported).slices(), check_box3d(boxes3d[0], stack.shape, "box")
    one_by_one = segment_box3d(slices, SliceEmbeddings(slices, stack), box)
    with ThreadPoolExecutor(2) as pool:  # both chains at once: the very same masks
        assert np.array_equal(segment_box3d(slices, SliceEmbeddings(slices, stack), box, pool=pool), one_by_one)
    int8 = segment_stack(OnnxPredictor(exported, runtime="onnxruntime-int8"), stack, boxes3d)
    assert int8.shape == want.shape and not int8[0].any() and not int8[5].any()  # outside z0..z1: untouched
    image = np.repeat(stack[2][..., None], 3, axis=2)
    two_d = labels_2d(OnnxPredictor(exported), image, BOXES[:2] / 4)
    assert (two_d == labels_2d(student, image, BOXES[:2] / 4)).mean() > 0.99
    (tmp_path / "cases").mkdir()
    np.savez(tmp_path / "cases" / "3DCase.npz", imgs=stack, boxes=boxes3d, spacing=[1.0, 1.0, 1.0])
    out = tmp_path / "out"
    int8_model = ["--model", str(exported), "--runtime", "onnxruntime-int8", "--threads", "2"]
    assert main(["predict", *int8_model, "--input", str(tmp_path / "cases"), "--out", str(out)]) == 0
    assert np.load(out / "3DCase.npz")["segs"].shape == stack.shape


def test_predict_answers_clicks_on_an_export(student: KDSam, exported: Path, tmp_path: Path) -> None:
    """A file segmented from a lone click, and from a box with a click, gives the PyTorch model's
    mask on the export too (through its prompt decoder)."""
    from kdsam.infer.files import Prompts, segment_image

    image, _ = synthesize("polyp", 0)
    path = tmp_path / "polyp.png"
    Image.fromarray(image).save(path)
    h, w = image.shape[:2]
    for prompts in (
        Prompts(points=np.array([[w / 2, h / 2, 1]], np.float32)),
        Prompts(
            boxes=np.array([[w / 4, h / 4, 3 * w / 4, 3 * h / 4]], np.float32),
            points=np.array([[w / 2, h / 2, 0]], np.float32),
        ),
    ):
        want, _, _ = segment_image(student, path, prompts, None)
        got, _, _ = segment_image(OnnxPredictor(exported), path, prompts, None)
        assert got.shape == want.shape and (got == want).mean() > 0.99
