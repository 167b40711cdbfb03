"""Atomic file writes: write to a temporary sibling, then rename over the target.

A write that fails (disk full, a read-only or immutable folder, a file where a folder should be)
leaves the target as it was and no temporary file, and is one line naming the path: a KdsamError.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kdsam.errors import KdsamError

# Failures of a write that the user fixes (space, permissions, the path), not bugs.
WRITE_ERRNOS = {
    errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR,
    errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.ENOENT, errno.EINVAL,
}  # fmt: skip


def write_error(path: Path, err: OSError) -> KdsamError:
    """One line for a failed write: what to do about a full disk, else the system's reason."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return KdsamError(f"{path}: disk full while writing; free space and rerun (nothing was lost)")
    return KdsamError(f"{path}: cannot write here ({err.strerror or err}); choose another path")


def make_folder(folder: str | Path) -> Path:
    """mkdir -p; a folder that cannot be made (a file in the way, no permission, an immutable or
    read-only parent) is one line naming it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError as err:  # a file where the folder should be
        raise KdsamError(f"{folder}: cannot create this folder: a file of that name is in the way") from err
    except OSError as err:
        raise KdsamError(f"{folder}: cannot create this folder ({err.strerror or err}); choose another path") from err
    return folder


@contextmanager
def atomic_path(path: str | Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in the target's folder; on success it replaces `path` in one rename.
    `suffix` ends the temporary name, for writers that pick the format by it (SimpleITK)."""
    path = Path(path)
    make_folder(path.parent)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    except OSError as err:
        raise write_error(path, err) from err
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; results should be as readable as any file
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as err:
        tmp_path.unlink(missing_ok=True)
        if err.errno in WRITE_ERRNOS:
            raise write_error(path, err) from err
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    """Strict JSON: NaN and infinities (not JSON, though Python writes them) are written as null."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(finite(obj), indent=2, allow_nan=False, default=_jsonable) + "\n")


def finite(obj: Any) -> Any:
    """`obj` with every non-finite float (NaN, +-inf) in its dicts, lists and tuples replaced by None;
    numpy and torch values are turned into Python ones first."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite(v) for v in obj]
    if hasattr(obj, "tolist") or hasattr(obj, "item"):
        return finite(_jsonable(obj))
    return obj


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save through a Python file, so a failed write keeps its OSError (a full disk): torch
    writing to a path says only "file write failed"."""
    import torch  # here, not at the top: every command writes files, few write tensors

    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as err:
            cause = _os_error(err)
            if cause is None:
                raise
            raise cause from err


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind a torch RuntimeError (in its context chain), if any."""
    while err is not None and not isinstance(err, OSError):
        err = err.__cause__ or err.__context__
    return err


def _jsonable(obj: Any) -> Any:
    """numpy and torch values: arrays and tensors -> (nested) lists, scalars and 0-d ones -> Python numbers."""
    if hasattr(obj, "tolist") and getattr(obj, "ndim", 0) > 0:
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
