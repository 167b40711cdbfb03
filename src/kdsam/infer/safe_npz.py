"""Read an npz whose arrays may be pickled objects, without running a pickle's code.

The CVPR25 challenge stores `boxes` and `clicks` as object arrays (lists of dicts), which numpy
only reads with `allow_pickle=True`: that would let a crafted case file run any code. Here each
member is read with numpy's own header parser; a plain array is read as numpy reads it, and an
object array is unpickled by `RestrictedUnpickler`, which resolves only the globals numpy needs to
rebuild arrays, dtypes and scalars. Lists, dicts, strings, numbers and None need no global at all,
so anything else (a function, a class, `os.system`) is refused in one line.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.errors import BadFileError

# numpy's array, dtype and scalar reconstructors (numpy 1.x names, then numpy 2's)
ALLOWED_GLOBALS = frozenset(
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("_reconstruct", "scalar")
) | {("numpy", "ndarray"), ("numpy", "dtype")}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle asked for a global outside ALLOWED_GLOBALS."""


class RestrictedUnpickler(pickle.Unpickler):
    """`pickle.Unpickler` that admits only numpy's array, dtype and scalar reconstructors."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"refused pickled {module}.{name} (only lists, dicts, strings, numbers, None and numpy "
                "arrays/scalars are read)"
            )
        return super().find_class(module, name)


HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


def _read_member(z: zipfile.ZipFile, member: str) -> np.ndarray:
    """A plain array as numpy reads it (no pickle allowed); an object array through the restricted unpickler."""
    with z.open(member) as f:
        version = np.lib.format.read_magic(f)
        if version not in HEADER_READERS:
            raise ValueError(f"{member}: npy format {version} is not one numpy's savez writes here")
        _, _, dtype = HEADER_READERS[version](f)
        if not dtype.hasobject:
            f.seek(0)
            return np.lib.format.read_array(f, allow_pickle=False)
        value = RestrictedUnpickler(f).load()
    if not isinstance(value, np.ndarray):
        raise pickle.UnpicklingError(f"an object member holds a {type(value).__name__}, not an array")
    return value


def member_dtypes(path: str | Path) -> dict[str, np.dtype]:
    """The dtype of each array of an npz from its headers alone (no data read); {} when unreadable."""
    out: dict[str, np.dtype] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if member.endswith(".npy"):
                    with z.open(member) as f:
                        version = np.lib.format.read_magic(f)
                        out[member[: -len(".npy")]] = HEADER_READERS[version](f)[2]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return {}
    return out


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Every array of an npz by name; object arrays through `RestrictedUnpickler`. A file that is not
    an npz, or asks for anything else, is a BadFileError naming it."""
    path = Path(path)
    out: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for member in z.namelist():
                if not member.endswith(".npy"):
                    continue
                out[member[: -len(".npy")]] = _read_member(z, member)
    except UnsafePickleError as err:
        raise BadFileError(f"{path}: {err}") from err
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, TypeError) as err:
        raise BadFileError(f"{path}: unreadable npz ({err})") from err
    return out
