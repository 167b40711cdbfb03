"""Teacher embeddings computed once per image and kept on disk in fp16.

The teacher dominates the cost of stage 1 (a ViT-H forward is ~1 min on a laptop CPU), so it runs
once per distinct (teacher, checkpoint, preprocessing, image content) and never again: the key
hashes all four, so a changed checkpoint or image never reuses a stale embedding.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch

from kdsam.models.sam import KDSam
from kdsam.utils.atomic import save_torch


def default_cache_dir() -> Path:
    """$KDSAM_CACHE, else ~/.cache/kdsam: shared by every run on the machine."""
    return Path(os.environ.get("KDSAM_CACHE", Path.home() / ".cache" / "kdsam"))


def teacher_key(teacher: KDSam) -> str:
    """Identity of a teacher's embedding function: name, weights hash and preprocessing."""
    ident = {
        "name": teacher.name,
        "weights": teacher.spec.get("sha256", "random"),
        "img_size": teacher.img_size,
        "normalization": teacher.normalization,
        "resize": teacher.resize_mode,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def image_key(image: np.ndarray) -> str:
    return hashlib.sha256(image.shape.__repr__().encode() + np.ascontiguousarray(image).tobytes()).hexdigest()[:24]


class TeacherCache:
    """Disk cache of 256x64x64 fp16 teacher embeddings; `n_computed` counts teacher forwards."""

    def __init__(self, teacher: KDSam, root: str | Path | None = None) -> None:
        self.teacher = teacher
        self.dir = Path(root or default_cache_dir()) / "embeddings" / f"{teacher.name}-{teacher_key(teacher)}"
        self.n_computed = 0
        self.n_reused = 0

    def path(self, image: np.ndarray) -> Path:
        return self.dir / f"{image_key(image)}.pt"

    def get(self, image: np.ndarray) -> torch.Tensor:
        """The teacher's embedding of `image` (256x64x64 fp16), from disk when already computed."""
        path = self.path(image)
        if path.is_file():
            try:
                emb = torch.load(path, map_location="cpu", weights_only=True)
                self.n_reused += 1
                return emb
            except Exception:  # any unreadable cache entry is ours to recompute
                path.unlink(missing_ok=True)  # a torn file from a crash: recompute it
        emb = self.teacher.embed(image)[0].to(torch.float16).cpu()
        self.n_computed += 1
        save_torch(path, emb)
        return emb
