"""The restricted npz reader: challenge object arrays read, anything that runs code refused."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from kdsam.errors import BadFileError
from kdsam.infer.safe_npz import load_npz


class Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_challenge_object_arrays_and_plain_arrays_read(tmp_path: Path) -> None:
    boxes = [{"z_min": 1, "z_max": np.int64(5), "z_mid": 3, "z_mid_x_min": 2.5, "z_mid_y_min": np.float32(3)}]
    clicks = [{"fg": [[1, 2, 3]], "bg": []}, {"fg": [], "bg": [np.array([0, 1, 1])]}]
    prev = np.asfortranarray(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    np.savez_compressed(tmp_path / "c.npz", imgs=prev, boxes=boxes, clicks=clicks, spacing=[1.0, 2.0, 3.0], n=None)
    data = load_npz(tmp_path / "c.npz")
    assert data["boxes"].tolist() == boxes and data["clicks"][0] == clicks[0]
    np.testing.assert_array_equal(data["clicks"][1]["bg"][0], [0, 1, 1])
    np.testing.assert_array_equal(data["imgs"], prev)
    assert data["spacing"].tolist() == [1.0, 2.0, 3.0] and data["n"].item() is None


@pytest.mark.parametrize("payload", [Payload(), Path("x"), {"f": print}])
def test_any_other_global_is_refused_in_one_line(tmp_path: Path, payload) -> None:
    arr = np.empty(1, dtype=object)
    arr[0] = payload
    np.savez(tmp_path / "evil.npz", boxes=arr)
    with pytest.raises(BadFileError, match="refused pickled") as err:
        load_npz(tmp_path / "evil.npz")
    assert "\n" not in str(err.value)


def test_a_bare_pickle_or_garbage_is_not_an_npz(tmp_path: Path) -> None:
    (tmp_path / "p.npz").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(BadFileError, match="unreadable npz"):
        load_npz(tmp_path / "p.npz")
