"""The INT8 graphs: the image encoder by ONNX Runtime static quantization, calibrated on a few real
images; the decoders' image-token projections by dynamic quantization.

Static (not dynamic) quantization, because the encoder is convolutions: their activations need
fixed scales, measured once on calibration images, for the integer kernels to run end to end.
QDQ format with per-channel weight scales (one per output channel; a ResNet's filters differ in
range by orders of magnitude) and unsigned 8-bit activations with signed 8-bit weights, the pair
the x86 VNNI kernels run fastest (signed activations measured ~3x slower here). Calibration uses
the images people will segment, prepared exactly as at inference; without them, a handful of the
built-in synthetic images, which the export says.

The decoders (`quantize_decoders`) are a transformer over the 4096 tokens of the 64x64 embedding
and a handful of prompt tokens. Their time is in the ten projections that read or write image
tokens; those get int8 weights and activations quantized at each call (dynamic: their ranges
follow the prompt, so there is nothing to calibrate). Everything else stays fp32, above all the
positional encoding of the prompt coordinates, which 8 bits would move by pixels.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from tqdm import tqdm

from kdsam.data.imageio import read_image
from kdsam.errors import BadFileError, KdsamError
from kdsam.export.layout import (
    DECODER_FILE,
    ENCODER_FILE,
    INT8_DECODER_FILE,
    INT8_ENCODER_FILE,
    INT8_PROMPT_DECODER_FILE,
    PROMPT_DECODER_FILE,
    place_graph,
)
from kdsam.export.onnx_predictor import prepare_image

DEFAULT_CALIBRATION_IMAGES = 8
# SAM's TwoWayTransformer: token->image attention reads the image tokens as keys and values,
# image->token attention asks with them and writes them back (the exported nodes keep these names).
IMAGE_TOKEN_PROJECTIONS = re.compile(
    r"(cross_attn_token_to_image|final_attn_token_to_image)/[kv]_proj/|cross_attn_image_to_token/(q_proj|out_proj)/"
)
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Calibration:
    """Images (HxWx3 uint8) to measure activation ranges on, where they came from, and how ranges
    are taken from them (an onnxruntime CalibrationMethod name; MinMax measured best on the demo)."""

    images: list[np.ndarray]
    source: str
    method: str = "MinMax"


def synthetic_calibration(n: int = DEFAULT_CALIBRATION_IMAGES) -> Calibration:
    """`n` built-in synthetic images, cycling through the modalities: the default when no data is given."""
    from kdsam.data.synthetic import MODALITIES, synthesize

    images = [synthesize(MODALITIES[i % len(MODALITIES)], 1000 + i)[0] for i in range(n)]
    return Calibration(images, f"{n} built-in synthetic images (pass --calibration-data for your own)")


def calibration_from(location: str | None, n: int = DEFAULT_CALIBRATION_IMAGES) -> Calibration:
    """The first `n` images of a folder of image files or of a dataset location (KIND:PATH); None: synthetic."""
    if n < 1:
        raise KdsamError(f"--calibration-images {n}: need at least one image")
    if location is None:
        return synthetic_calibration(n)
    folder = Path(location).expanduser()
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        images = []
        for path in files:
            try:
                images.append(read_image(path, max_side=1024))
            except BadFileError:
                continue  # an unreadable file among many: calibrate on the readable ones
            if len(images) == n:
                break
    else:
        from kdsam.data import open_dataset

        images = []
        for sample in open_dataset(location, max_side=1024).samples():
            images.append(sample.image)
            if len(images) == n:
                break
    if not images:
        raise KdsamError(f"--calibration-data {location}: no readable image there (PNG/JPEG/TIFF files or KIND:PATH)")
    return Calibration(images, f"{len(images)} images of {location}")


class _Reader(CalibrationDataReader):
    """Feeds the calibration images to the encoder, prepared as `OnnxPredictor.set_image` prepares them."""

    def __init__(self, calibration: Calibration, config: dict[str, Any]) -> None:
        self.images = iter(tqdm(calibration.images, desc="INT8 calibration", unit="img", leave=False))
        self.config = config

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self.images, None)
        return None if image is None else {"image": prepare_image(image, self.config)[0]}


@contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """onnxruntime.quantization logs advice through the root logger, which would also configure it
    for the whole process; a null handler keeps both out of the user's way."""
    root = logging.getLogger()
    handler = logging.NullHandler()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        root.removeHandler(handler)


def quantize_encoder(folder: Path, config: dict[str, Any], calibration: Calibration) -> dict[str, Any]:
    """Write INT8_ENCODER_FILE beside the fp32 encoder in `folder`; returns the config's "int8" entry.

    The fp32 graph is first simplified by ONNX Runtime's pre-processing (shape inference, folding
    the Identity nodes the exporter leaves on shared biases), without which convolutions keep a
    float bias and cannot be fused into integer kernels.
    """
    external = bool(config.get("external_data"))
    with tempfile.TemporaryDirectory(dir=folder, prefix=".int8.") as tmp, _quiet_root_logger():
        simplified = Path(tmp) / "encoder.onnx"
        quant_pre_process(str(folder / config.get("encoder", ENCODER_FILE)), str(simplified),
                          save_as_external_data=external)  # fmt: skip
        quantized = Path(tmp) / INT8_ENCODER_FILE
        quantize_static(
            str(simplified),
            str(quantized),
            _Reader(calibration, config),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod[calibration.method],
            use_external_data_format=external,
        )
        place_graph(quantized, folder / INT8_ENCODER_FILE, external)
    return {
        "encoder": INT8_ENCODER_FILE,
        "calibration": calibration.source,
        "calibration_images": len(calibration.images),
        "scheme": f"static QDQ, per-channel int8 weights, uint8 activations, {calibration.method} calibration",
    }


def image_token_projections(path: Path) -> list[str]:
    """The MatMul nodes of a decoder graph that project the 4096 image tokens (ten in SAM's decoder)."""
    nodes = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "MatMul"]
    found = [name for name in nodes if IMAGE_TOKEN_PROJECTIONS.search(name)]
    if not found:  # quantize_dynamic would take an empty list as "every node"
        raise KdsamError(f"{path}: no image-token projection found to quantize (not a SAM mask decoder graph?)")
    return found


def quantize_decoders(folder: Path) -> dict[str, Any]:
    """Write the INT8 box and prompt decoders beside the fp32 ones in `folder` (image-token
    projections only, see the module docstring); returns their entries of the config's "int8"."""
    with tempfile.TemporaryDirectory(dir=folder, prefix=".int8.") as tmp, _quiet_root_logger():
        for source, target in ((DECODER_FILE, INT8_DECODER_FILE), (PROMPT_DECODER_FILE, INT8_PROMPT_DECODER_FILE)):
            written = Path(tmp) / target
            quantize_dynamic(
                str(folder / source),
                str(written),
                nodes_to_quantize=image_token_projections(folder / source),
                weight_type=QuantType.QInt8,
            )
            place_graph(written, folder / target, external_data=False)
    return {
        "decoder": INT8_DECODER_FILE,
        "prompt_decoder": INT8_PROMPT_DECODER_FILE,
        "decoder_scheme": "dynamic, int8 weights and per-call uint8 activations in the image-token projections only",
    }
