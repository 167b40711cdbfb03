"""An export folder's layout: the file names of its graphs and config, and how a graph is put in place.

Below the exporter, the quantizer and the ONNX predictor, which all name these files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import onnx

from kdsam.utils.atomic import atomic_path

ENCODER_FILE = "image_encoder.onnx"
INT8_ENCODER_FILE = "image_encoder.int8.onnx"
DECODER_FILE = "box_decoder.onnx"
PROMPT_DECODER_FILE = "prompt_decoder.onnx"
INT8_DECODER_FILE = "box_decoder.int8.onnx"
INT8_PROMPT_DECODER_FILE = "prompt_decoder.int8.onnx"
CONFIG_FILE = "kdsam_onnx.json"


def data_file(path: Path) -> Path:
    """Where a graph's external weights live: FILE.data beside FILE."""
    return path.with_name(path.name + ".data")


def place_graph(written: Path, path: Path, external_data: bool) -> None:
    """Move a graph written in a private folder to `path`: one rename, or with external_data a
    re-save as `path` + `data_file(path)` (however the writer had spread its tensors)."""
    data_file(path).unlink(missing_ok=True)  # a stale FILE.data from an earlier export must not linger
    if not external_data:
        os.replace(written, path)
        return
    with atomic_path(path) as final:
        onnx.save_model(
            onnx.load(str(written)),
            str(final),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file(path).name,
            size_threshold=1024,
        )
    shutil.copymode(path, data_file(path))  # onnx writes it private (0600); as readable as the graph
