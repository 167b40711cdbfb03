"""A tiny random student behind the app, and helpers shared by the API and browser tests."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from kdsam.data.synthetic import synthesize
from kdsam.models.sam import KDSam
from kdsam.models.student import build_student
from kdsam.predictor import KDSamPredictor
from kdsam.serve.engine import Engine


@pytest.fixture(scope="session")
def tiny_model() -> KDSam:
    torch.manual_seed(0)
    return build_student(None, "resnet18", 64).eval()


@pytest.fixture(scope="session")
def image() -> np.ndarray:
    return synthesize("polyp", 3)[0]


@pytest.fixture(scope="session")
def image_png(image: np.ndarray) -> bytes:
    return png_bytes(image)


@pytest.fixture
def engine(tiny_model: KDSam) -> Engine:
    return Engine(KDSamPredictor(tiny_model), max_sessions=2)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def decode_png(text: str) -> np.ndarray:
    """A base64 PNG (or a data URL of one) -> HxW bool, object where the value is 255."""
    data = base64.b64decode(text.split(",", 1)[-1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("L")) == 255
