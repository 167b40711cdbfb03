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


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Load a state dict with weights_only=True; one clear line for a missing, truncated or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise KdsamError(f"{path}: checkpoint not found ({what})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KdsamError(
            f"{path}: not a readable PyTorch checkpoint (truncated or wrong file?): {reason[:200]}"
        ) from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
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
