"""write_json takes numpy and torch values as they come out of metrics and models; failed writes
are one line and leave the target as it was."""

from __future__ import annotations

import errno
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from kdsam.errors import KdsamError
from kdsam.utils.atomic import save_torch, write_json
from tests import hostile


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


def test_non_finite_numbers_are_written_as_null_so_the_file_stays_json(tmp_path: Path) -> None:
    write_json(tmp_path / "x.json", {"low": float("nan"), "high": np.float32("inf"), "both": np.array([1.0, -np.inf])})
    text = (tmp_path / "x.json").read_text()
    assert json.loads(text, parse_constant=pytest.fail) == {"low": None, "high": None, "both": [1.0, None]}


def test_disk_full_in_torch_save_is_one_line_and_keeps_the_old_file(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "ckpt.pt"
    save_torch(target, {"w": torch.zeros(3)})
    hostile.fill_disk(monkeypatch, room=100)
    with pytest.raises(KdsamError, match="disk full while writing") as err:
        save_torch(target, {"w": torch.ones(10_000)})
    assert str(err.value).startswith(str(target)) and "\n" not in str(err.value)
    assert torch.load(target, weights_only=True)["w"].tolist() == [0.0, 0.0, 0.0]
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no partial file


@pytest.mark.parametrize(
    ("err", "words"),
    [
        (
            PermissionError(errno.EPERM, "Operation not permitted"),
            "cannot create this folder (Operation not permitted)",
        ),
        (OSError(errno.EROFS, "Read-only file system"), "folder (Read-only file system)"),
    ],
)
def test_a_folder_mkdir_refuses_is_one_line(tmp_path: Path, monkeypatch, err: OSError, words: str) -> None:
    def refuse(self, *args, **kwargs):
        raise err

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(KdsamError, match=re.escape(words)):
        write_json(tmp_path / "immutable" / "x.json", {})


def test_a_file_in_the_way_of_a_folder_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(KdsamError, match="cannot create this folder"):
        write_json(tmp_path / "file" / "x.json", {})
