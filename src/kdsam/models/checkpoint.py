"""Reading checkpoints safely and saying exactly what is wrong with a bad one."""

from __future__ import annotations

import hashlib
import pickle
import zipfile
from pathlib import Path

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


def _load_error(path: Path, err: Exception) -> str:
    """What is wrong with a checkpoint torch could not load, in a few words (torch's own text is several
    paragraphs and reads like advice to load the file unsafely, which kdsam never does)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if not head:
        return "the file is empty"
    if not head.startswith((ZIP_MAGIC, PICKLE_MAGIC)):
        return f"not a PyTorch checkpoint (the file starts with {head!r})"
    if isinstance(err, pickle.UnpicklingError) and head == ZIP_MAGIC:
        try:
            found = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception:  # an unreadable archive: reported as damaged below
            found = []
        if found:
            return (
                f"holds pickled Python objects ({', '.join(found[:3])}), which kdsam never loads; "
                "it reads tensors and plain containers only"
            )
    return "truncated or damaged (an interrupted download or save?)"


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
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError, IndexError) as err:
        raise KdsamError(f"{path}: not a readable checkpoint: {_load_error(path, err)} ({what})") from None
    obj = _unwrap(obj)
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
