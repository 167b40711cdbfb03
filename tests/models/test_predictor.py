"""KDSamPredictor against the official SamPredictor, input conversion, and each model's preprocessing."""

from __future__ import annotations

import os

import numpy as np
import pytest
import skimage.data
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from kdsam.models.sam import KDSam
from kdsam.models.teachers import build_architecture
from kdsam.models.transforms import SquashResize
from kdsam.predictor import KDSamPredictor, Predictor

from .conftest import recording_sam

SLOW = os.environ.get("KDSAM_SLOW_TESTS") == "1"

# (point_coords, point_labels, box, multimask_output) as SamPredictor.predict takes them. KDSamPredictor
# inherits predict() and only changes the image/box transform, so a few kinds cover every path.
PROMPTS = {
    "points": (np.array([[170.0, 150.0], [20.0, 30.0]]), np.array([1, 0]), None, True),
    "box": (None, None, np.array([90.0, 60.0, 260.0, 230.0]), False),
    "box+point": (np.array([[170.0, 150.0]]), np.array([1]), np.array([90.0, 60.0, 260.0, 230.0]), False),
}
BOXES = np.array([[90.0, 60.0, 260.0, 230.0], [200.0, 150.0, 340.0, 280.0]])


def predictor_pair(sam: Sam, image: np.ndarray) -> tuple[SamPredictor, KDSamPredictor]:
    """The official predictor on `sam` and ours on KDSam(sam), both with the image set."""
    official, ours = SamPredictor(sam), KDSamPredictor(KDSam(sam, name="under-test"))
    official.set_image(image)
    ours.set_image(image)
    return official, ours


def assert_same_predictions(official: SamPredictor, ours: KDSamPredictor) -> None:
    """Bit-identical embeddings, masks, scores and low-res logits for points, boxes and both."""
    assert torch.equal(official.features, ours.features)
    for name, (coords, labels, box, multimask) in PROMPTS.items():
        kwargs = dict(point_coords=coords, point_labels=labels, box=box, multimask_output=multimask)
        for want, got in zip(official.predict(**kwargs), ours.predict(**kwargs), strict=True):
            assert want.shape == got.shape and np.array_equal(want, got), name


@pytest.fixture(scope="module")
def tiny_pair(tiny: Sam) -> tuple[SamPredictor, KDSamPredictor]:
    """On a real, non-square photo (300x451), so resizing and padding matter."""
    return predictor_pair(tiny, skimage.data.chelsea())


def test_predictor_matches_official_sam_predictor(tiny_pair) -> None:
    assert_same_predictions(*tiny_pair)


@pytest.mark.skipif(not SLOW, reason="ViT-B at 1024 px takes ~15 s on 2 cores; set KDSAM_SLOW_TESTS=1")
def test_predictor_matches_official_on_sam_vit_b(polyp) -> None:
    torch.manual_seed(0)
    sam = build_architecture("sam_vit_b").eval()
    assert_same_predictions(*predictor_pair(sam, polyp[0]))


def test_predict_boxes_equals_one_predict_per_box(tiny_pair) -> None:
    _, ours = tiny_pair
    masks, scores, logits = ours.predict_boxes(BOXES)
    assert masks.shape == (len(BOXES), 1, *ours.original_size) and masks.dtype == bool
    assert scores.shape == (len(BOXES), 1) and logits.shape == (len(BOXES), 1, 256, 256)
    for i, box in enumerate(BOXES):
        m, s, lo = ours.predict(box=box, multimask_output=False)
        np.testing.assert_allclose(logits[i], lo, atol=1e-5)
        np.testing.assert_allclose(scores[i], s, atol=1e-5)
        assert (masks[i] == m).mean() > 0.999
    assert np.array_equal(ours.segment(BOXES), masks[:, 0].any(axis=0))
    assert not ours.segment(np.zeros((0, 4))).any()
    multi = ours.predict_boxes(BOXES, multimask_output=True)
    assert [a.shape[:2] for a in multi] == [(len(BOXES), 3)] * 3


def recorded_input(predictor: KDSamPredictor, image: np.ndarray) -> torch.Tensor:
    """The tensor the predictor's (recording) encoder received for `image`."""
    predictor.set_image(image)
    return predictor.model.image_encoder.last_input


@pytest.fixture
def recording_predictor() -> KDSamPredictor:
    return KDSamPredictor(KDSam(recording_sam(), name="recording"))


def test_a_predictor_is_a_predictor_before_its_first_image(recording_predictor) -> None:
    """Callers (evaluate, the server) tell a predictor from a model by the Protocol, image set or not."""
    assert isinstance(recording_predictor, Predictor) and not recording_predictor.is_image_set
    assert not isinstance(recording_predictor.model, Predictor)


def test_greyscale_rgba_and_16bit_images_are_converted(recording_predictor, polyp) -> None:
    rgb = polyp[0]
    grey = rgb.mean(axis=2).astype(np.uint8)
    reference = recorded_input(recording_predictor, np.dstack([grey] * 3))
    for variant in (grey, grey[..., None]):
        assert torch.equal(recorded_input(recording_predictor, variant), reference)
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 77, np.uint8)])
    assert torch.equal(recorded_input(recording_predictor, rgba), recorded_input(recording_predictor, rgb))
    deep = grey.astype(np.uint16) * 200 + 1000
    scaled = np.clip((deep - deep.min()) / (deep.max() - deep.min()) * 255 + 0.5, 0, 255).astype(np.uint8)
    expected = recorded_input(recording_predictor, np.dstack([scaled] * 3))
    assert torch.equal(recorded_input(recording_predictor, deep), expected)
    assert recording_predictor.original_size == rgb.shape[:2]


def test_squash_transform_round_trips_boxes(polyp) -> None:
    image = polyp[0]
    h, w = image.shape[:2]
    assert h != w
    model = KDSam(recording_sam(), name="squash", resize_mode="squash")
    x, resized = model.prepare(image)
    assert resized == (256, 256) and x.shape == (1, 3, 256, 256)
    assert (x[0, :, -1] != 0).any() and (x[0, :, :, -1] != 0).any()  # stretched, no padding
    frame = model.boxes_to_prompt_frame(torch.as_tensor(BOXES), (h, w)).numpy()
    np.testing.assert_allclose(frame, BOXES * [256 / w, 256 / h, 256 / w, 256 / h], rtol=1e-6)
    np.testing.assert_allclose(SquashResize(1024).apply_boxes(BOXES, (h, w)) * [w, h, w, h] / 1024, BOXES, rtol=1e-6)
    predictor = KDSamPredictor(model)
    predictor.set_image(image)
    assert predictor.predict_boxes(BOXES[:1])[0].shape == (1, 1, h, w)


def test_an_empty_image_is_a_clear_error(recording_predictor) -> None:
    for empty in (np.zeros((0, 0, 3), np.uint8), np.zeros((0, 64), np.uint8), np.array([])):
        with pytest.raises(ValueError, match="the image is empty"):
            recording_predictor.set_image(empty)


def test_no_boxes_give_empty_arrays_and_bad_boxes_a_clear_error(tiny_pair) -> None:
    _, ours = tiny_pair
    h, w = ours.original_size
    for none in (np.zeros((0, 4)), [], np.zeros(0)):
        masks, scores, logits = ours.predict_boxes(none)
        assert (masks.shape, scores.shape, logits.shape) == ((0, 1, h, w), (0, 1), (0, 1, 256, 256))
        assert masks.dtype == bool
    masks, scores, _ = ours.predict_boxes(np.zeros((0, 4)), multimask_output=True, return_logits=True)
    assert masks.shape == (0, 3, h, w) and masks.dtype == np.float32 and scores.shape == (0, 3)
    for bad in (np.zeros((2, 5)), np.zeros(6), np.zeros((1, 2, 4))):
        with pytest.raises(ValueError, match="Nx4"):
            ours.predict_boxes(bad)
