"""Embeddings computed once per image and kept on disk in fp16, one file per entry.

The teacher dominates the cost of stage 1 (a ViT-H forward is ~1 min on a laptop CPU), so it runs
once per distinct (model weights, preprocessing, image content) and never again: the key hashes all
of them, so a changed checkpoint or image never reuses a stale embedding. Each entry is written to a
temporary file and renamed into place, so concurrent writers (ranks, machines on a shared folder)
never leave half an entry; an entry that fails to load or has the wrong shape is recomputed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from kdsam.distill.process import TrainingProcess
from kdsam.errors import KdsamError
from kdsam.models.sam import KDSam
from kdsam.utils.atomic import save_torch
from kdsam.utils.cache_dir import default_cache_dir

log = logging.getLogger("kdsam")

EMBEDDING_SHAPE = (256, 64, 64)
LOW_RES = 256  # side of SAM's low-resolution mask logits
STALE_TMP_S = 3600  # a temporary file this old belongs to a writer that died


def weights_hash(module: torch.nn.Module) -> str:
    """sha256 over every tensor of the state dict (names, shapes, dtypes, bytes): identifies weights
    that came from no checkpoint file (random, or built in code)."""
    h = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_key(model: KDSam) -> str:
    """Identity of a model's embedding function: name, weights and preprocessing. The checkpoint's
    file hash stands for the weights when the model was loaded from one, else the weights themselves."""
    ident = {
        "name": model.name,
        "weights": model.card.get("sha256") or weights_hash(model),
        "img_size": model.img_size,
        "normalization": model.normalization,
        "resize": model.resize_mode,
        "recipe": model.recipe,  # the official resampling (OpenCV area, skimage spline) changes the input
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]


def image_key(image: np.ndarray) -> str:
    return hashlib.sha256(image.shape.__repr__().encode() + np.ascontiguousarray(image).tobytes()).hexdigest()[:24]


def boxes_key(boxes: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(boxes, dtype=np.float32).tobytes()).hexdigest()[:12]


class EmbeddingCache:
    """Disk cache of a model's 256x64x64 fp16 embeddings (and, for a teacher, its mask logits per
    box set); `n_computed` counts model forwards, `n_reused` entries read back."""

    def __init__(self, model: KDSam, root: str | Path | None = None, dtype: torch.dtype | None = None) -> None:
        """dtype: the encoder's autocast dtype (None: fp32). Not part of the key: entries computed in
        bf16 on one machine serve fp32 runs on another, as a GPU-filled cache serves CPUs."""
        self.model = model
        self.dtype = dtype
        safe = re.sub(r"[^\w.@-]", "_", model.name)
        self.dir = Path(root or default_cache_dir()) / "embeddings" / f"{safe}-{model_key(model)}"
        self.n_computed = 0
        self.n_reused = 0

    def ensure_writable(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".probe-{os.getpid()}.tmp"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise KdsamError(
                f"{self.dir}: cache folder not writable ({err.strerror}); pass a writable --cache-dir"
            ) from err

    def clean_stale(self) -> int:
        """Remove temporary files older than an hour (writers killed mid-save); live writers' are young."""
        if not self.dir.is_dir():
            return 0
        cutoff = time.time() - STALE_TMP_S
        stale = [p for p in self.dir.glob(".*.tmp") if _mtime(p) < cutoff]
        for p in stale:
            p.unlink(missing_ok=True)
        return len(stale)

    def path(self, image: np.ndarray | str) -> Path:
        key = image if isinstance(image, str) else image_key(image)
        return self.dir / f"{key}.pt"

    def logits_path(self, key: str, boxes: np.ndarray) -> Path:
        return self.dir / f"{key}-logits-{boxes_key(boxes)}.pt"

    def load(self, key: str) -> torch.Tensor | None:
        """The stored embedding, or None when missing, torn or of the wrong shape (then recomputed)."""
        return _load_checked(self.path(key), EMBEDDING_SHAPE)

    def load_logits(self, key: str, boxes: np.ndarray) -> torch.Tensor | None:
        return _load_checked(self.logits_path(key, boxes), (len(boxes), 1, LOW_RES, LOW_RES))

    def has(self, key: str, boxes: np.ndarray | None = None) -> bool:
        if self.load(key) is None:
            return False
        return boxes is None or self.load_logits(key, boxes) is not None

    def save(self, key: str, emb: torch.Tensor) -> None:
        _save(self.path(key), emb)

    def save_logits(self, key: str, boxes: np.ndarray, logits: torch.Tensor) -> None:
        _save(self.logits_path(key, boxes), logits)

    @torch.inference_mode()
    def compute(self, images: list[np.ndarray]) -> torch.Tensor:
        """Embeddings of a batch of images in one forward, returned on the CPU in fp16 (as stored);
        not stored here."""
        x = torch.cat([self.model.prepare(im)[0] for im in images])
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(x.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            emb = self.model.image_encoder(x)
        self.n_computed += len(images)
        return emb.float().to(torch.float16).cpu()

    @torch.inference_mode()
    def compute_logits(self, emb: torch.Tensor, boxes: np.ndarray, original_size: tuple[int, int]) -> torch.Tensor:
        """The model's low-res mask logits for every box of one image (Kx1x256x256 fp16)."""
        device = self.model.device
        prompt = self.model.boxes_to_prompt_frame(torch.from_numpy(boxes), original_size).to(device)
        embs = emb[None].float().to(device).expand(len(boxes), -1, -1, -1)
        return self.model.decode(embs, prompt)[0].to(torch.float16).cpu()

    def get(self, image: np.ndarray) -> torch.Tensor:
        """The embedding of one image (256x64x64 fp16), from disk when already computed."""
        key = image_key(image)
        emb = self.load(key)
        if emb is not None:
            self.n_reused += 1
            return emb
        emb = self.compute([image])[0]
        self.save(key, emb)
        return emb


def open_cache(model: KDSam, root: str | Path | None, process: TrainingProcess) -> EmbeddingCache:
    """`model`'s cache, checked writable and rid of dead writers' temporaries by rank 0 before any
    rank uses it."""
    cache = EmbeddingCache(model, root, process.amp_dtype)
    if process.is_main:
        cache.ensure_writable()
        cache.clean_stale()
    process.barrier()
    return cache


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _load_checked(path: Path, shape: tuple[int, ...]) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        t = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torn or foreign file: ours to recompute
        return None
    if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape or t.dtype != torch.float16:
        return None
    return t


def _save(path: Path, t: torch.Tensor) -> None:
    try:
        save_torch(path, t.contiguous().clone())
    except PermissionError as err:
        raise KdsamError(f"{path.parent}: cache folder not writable; pass a writable --cache-dir") from err
