"""Reading checkpoints safely and saying exactly what is wrong with a bad one."""

from __future__ import annotations

import hashlib
import pickle
import pickletools
import warnings
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kdsam.errors import KdsamError


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Content hash; keys caches so a replaced checkpoint never reuses stale embeddings."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
PICKLE_MAGIC = b"\x80"  # the legacy format: a pickle stream (protocol 2 or later)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel/DataParallel, torch.compile
# Training scripts store metrics as numpy scalars ("best_loss": np.float64): plain data, safe to read.
_NUMPY_CORE = np._core if hasattr(np, "_core") else np.core
NUMPY_SCALARS = [
    _NUMPY_CORE.multiarray.scalar,
    np.dtype,
    *(type(np.dtype(t)) for t in (np.bool_, np.uint8, np.int32, np.int64, np.float16, np.float32, np.float64)),
]


def _pickled_globals(path: Path) -> list[str]:
    """The module.name globals the pickles at the start of `path` would import, read with pickletools
    (which runs nothing); the scan stops at the first bytes that are not a pickle (a legacy torch
    file's tensor data, a truncation)."""
    found: list[str] = []
    strings: list[str] = []
    with open(path, "rb") as fh:
        try:
            while fh.peek(1):  # one pickle after another, to the end of the file
                for op, arg, _ in pickletools.genops(fh):
                    if isinstance(arg, str):
                        strings.append(arg)
                    if op.name in ("GLOBAL", "INST"):
                        found.append(str(arg).replace(" ", "."))
                    elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                        found.append(".".join(strings[-2:]))
        except (ValueError, EOFError, UnicodeDecodeError, pickle.UnpicklingError):
            pass
    return found


def _is_code(name: str) -> bool:
    """A global that torch's weights-only reader refuses: anything beyond torch's own rebuild helpers
    and plain containers."""
    return not name.startswith(("torch.", "collections.OrderedDict", "builtins.set", "_codecs.encode"))


def _load_error(path: Path, err: Exception) -> str:
    """What is wrong with a checkpoint torch could not load, in a few words (torch's own text is several
    paragraphs and reads like advice to load the file unsafely, which kdsam never does)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "not a readable checkpoint: the file is empty"
    if isinstance(err, pickle.UnpicklingError):
        try:
            found = (
                torch.serialization.get_unsafe_globals_in_checkpoint(path)
                if head == ZIP_MAGIC
                else [g for g in _pickled_globals(path) if _is_code(g)]
            )
        except Exception:  # an unreadable archive: reported as damaged below
            found = []
        if found:
            return (
                f"not a weights-only checkpoint: refusing to unpickle (it would import {', '.join(found[:3])}); "
                "kdsam reads tensors and plain containers only"
            )
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return f"not a readable checkpoint: not a PyTorch checkpoint (the file starts with {head!r})"
    return "not a readable checkpoint: truncated or damaged (an interrupted download or save?)"


def load_weights_only(path: Path, what: str) -> object:
    """torch.load(weights_only=True) on CPU; a file it cannot read is one line: the file, what is wrong
    with it, and what it was expected to be. Numpy scalars (training metrics) are read as data.
    torch's warnings about the file (an unusual pickle protocol) are dropped: the one line says it."""
    try:
        with torch.serialization.safe_globals(NUMPY_SCALARS), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError, IndexError) as err:
        raise KdsamError(f"{path}: {_load_error(path, err)} ({what})") from None


def _unwrap(obj: object) -> object:
    """The state dict inside a training checkpoint: {"model": ...} or {"state_dict": ...} wrappers, and the
    key prefixes that multi-GPU (DDP) and compiled training add, removed."""
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if isinstance(obj, dict) and obj:
        for prefix in WRAPPER_PREFIXES:
            if all(isinstance(k, str) and k.startswith(prefix) for k in obj):
                obj = {k.removeprefix(prefix): v for k, v in obj.items()}
    return obj


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict with weights_only=True; one clear line for a missing, truncated or foreign file.

    Accepts a bare state dict or one wrapped as training scripts save it ({"model": ...},
    {"state_dict": ...}, keys prefixed "module." by DistributedDataParallel)."""
    path = Path(path)
    if not path.is_file():
        raise KdsamError(f"{path}: checkpoint not found ({what})")
    obj = _unwrap(load_weights_only(path, what))
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise KdsamError(f"{path}: holds no state dict of tensors; expected {what}")
    return obj


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path, what: str) -> None:
    """Strict load that names the first missing/unexpected keys and any shape mismatch."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise KdsamError(
            f"{path}: not a {what} checkpoint: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}"
        )
    wrong = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items() if state[k].shape != v.shape]
    if wrong:
        k, got, want = wrong[0]
        raise KdsamError(
            f"{path}: not a {what} checkpoint: {len(wrong)} tensors of the wrong shape, "
            f"first {k} is {got}, expected {want}"
        )
    module.load_state_dict(state, strict=True)
