"""write_json takes numpy and torch values as they come out of metrics and models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from kdsam.utils.atomic import write_json


def test_numpy_and_torch_values_become_json(tmp_path: Path) -> None:
    obj = {
        "array": np.arange(3, dtype=np.int64),
        "matrix": np.eye(2, dtype=np.float32),
        "scalar": np.float32(0.5),
        "int": np.int64(7),
        "zero_d": np.array(2.5),
        "bool": np.bool_(True),
        "tensor": torch.tensor([1.5, 2.0]),
        "tensor_scalar": torch.tensor(3),
        "path": tmp_path,
    }
    write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text()) == {
        "array": [0, 1, 2],
        "matrix": [[1.0, 0.0], [0.0, 1.0]],
        "scalar": 0.5,
        "int": 7,
        "zero_d": 2.5,
        "bool": True,
        "tensor": [1.5, 2.0],
        "tensor_scalar": 3,
        "path": str(tmp_path),
    }
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]  # no temporary file left behind
