"""Interactive 3D: a class's volume from its box, then refined by clicks on any slice (CVPR25 cases).

The rule, per class, at each call:
1. Start: the previous step's answer (`prev_pred == label`) when given; otherwise the box
   propagated from its slice z_mid outwards (kdsam.infer.volume, as CVPR24 does from the middle),
   or nothing when the class has clicks only.
2. Each new click (all of them when there is no previous answer) corrects its slice z: every click
   of the class on z (object 1, background 0), the box of z's current mask widened to take in the
   object clicks (else the nearest labelled slice's, else the case's 2D box), and, where this slice
   was corrected at an earlier step, that step's low-res logits as SAM's mask prompt (kept in the
   case's cache folder, used only while the previous answer still holds that very mask).
3. Then the correction spreads outwards from z, one neighbour at a time, each neighbour taking its
   box from the slice before it (with its own clicks, if any), and stops at the first neighbour
   whose mask agrees with its old one to Dice >= CHANGE_DICE. A slice emptied by a background
   click empties its neighbours away from the object's centre (along z) until one already is.
   With a box, nothing grows past its z range (widened to any object click outside it).

The slice embeddings of a case are computed once and kept across the evaluator's six calls
(`CaseStore`, in $KDSAM_CACHE/cvpr25/, keyed by the model and the image's content; fp16, also in
the call that computes them, so every call sees the same numbers).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from kdsam.infer.cvpr25 import Case25, ClassPrompts, read_case25
from kdsam.infer.volume import (
    BOX_MARGIN,
    FramePrompt,
    SliceEmbeddings,
    SliceModel,
    TorchSlices,
    box_from_neighbour,
    segment_box3d,
    slice_model,
    slice_workers,
)

CHANGE_DICE = 0.99  # a neighbour that changes less than this (Dice with its old mask) ends the spreading
NEAR_SLICES = 3  # a corrected slice with no mask borrows the box of a labelled slice this close
EDIT_RADIUS = 3  # pixels: a click no decode obeys edits the old mask by a disc this wide
KEEP_CASES = 8  # case folders kept in the cache (the least recently used go first)


def _agree(a: np.ndarray, b: np.ndarray) -> bool:
    total = int(a.sum()) + int(b.sum())
    return total == 0 or 2.0 * int((a & b).sum()) / total >= CHANGE_DICE


def _sha(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


class CaseStore(MutableMapping):
    """Slice embeddings of one case on disk (fp16, one .npy per slice) and in memory, plus the
    low-res logits of corrected slices with the hash of the mask each produced. `SliceEmbeddings`
    uses it as its `cache`."""

    def __init__(self, folder: Path | None, torch_device: torch.device | None) -> None:
        self.folder, self.device = folder, torch_device
        self.memory: dict[int, Any] = {}
        if folder is not None:
            folder.mkdir(parents=True, exist_ok=True)
            os.utime(folder)

    def _as_model_type(self, half: torch.Tensor) -> Any:
        full = half.float()
        return full.numpy() if self.device is None else full.to(self.device)

    def __setitem__(self, z: int, embedding: Any) -> None:
        # torch converts to and from fp16 about 15x faster than numpy's astype (5 ms a slice there)
        tensor = embedding if torch.is_tensor(embedding) else torch.from_numpy(np.asarray(embedding, np.float32))
        half = tensor.detach().to("cpu", torch.float16)
        self.memory[z] = self._as_model_type(half)
        if self.folder is not None:
            tmp = self.folder / f".emb_{z}.{os.getpid()}.npy"
            np.save(tmp, half.numpy())
            tmp.replace(self.folder / f"emb_{z}.npy")

    def _file(self, z: int) -> Path | None:
        return None if self.folder is None else self.folder / f"emb_{z}.npy"

    def __contains__(self, z: object) -> bool:
        path = self._file(z) if isinstance(z, int) else None
        return z in self.memory or (path is not None and path.is_file())

    def __getitem__(self, z: int) -> Any:
        if z not in self.memory:
            path = self._file(z)
            try:
                self.memory[z] = self._as_model_type(torch.from_numpy(np.load(path, allow_pickle=False)))
            except (OSError, ValueError, TypeError) as err:
                raise KeyError(z) from err
        return self.memory[z]

    def __delitem__(self, z: int) -> None:
        self.memory.pop(z, None)

    def __iter__(self) -> Iterator[int]:
        return iter(self.memory)

    def __len__(self) -> int:
        return len(self.memory)

    def logits(self, label: int, z: int, mask: np.ndarray) -> np.ndarray | None:
        """The low-res logits that produced `mask` on slice z of `label` at an earlier step, if kept."""
        if self.folder is None:
            return None
        path = self.folder / f"logits_{label}_{z}_{_sha(mask)}.npy"
        with contextlib.suppress(OSError, ValueError):
            return np.load(path, allow_pickle=False).astype(np.float32)
        return None

    def keep_logits(self, label: int, z: int, mask: np.ndarray, logits: np.ndarray) -> None:
        if self.folder is not None:
            for old in self.folder.glob(f"logits_{label}_{z}_*.npy"):
                old.unlink(missing_ok=True)
            np.save(self.folder / f"logits_{label}_{z}_{_sha(mask)}.npy", logits.astype(np.float16))


def model_identity(sm: SliceModel) -> str:
    """What makes embeddings and decodes differ: a PyTorch model's weights and preprocessing, an
    export's config and graph files."""
    if isinstance(sm, TorchSlices):
        from kdsam.distill.cache import model_key

        return model_key(sm.model)
    predictor = getattr(sm, "predictor", None)
    if predictor is None:  # another SliceModel: its own name for itself
        return str(getattr(sm, "identity", type(sm).__qualname__))
    files = sorted(p for p in predictor.folder.iterdir() if p.suffix == ".onnx")
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    text = json.dumps([predictor.config, predictor.runtime, stats], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def case_folder(root: Path, sm: SliceModel, imgs: np.ndarray) -> Path:
    """root/cvpr25/<model>-<image>; the least recently used beyond KEEP_CASES are removed."""
    base = root / "cvpr25"
    folder = base / f"{model_identity(sm)}-{_sha(np.asarray(imgs.shape)) + _sha(imgs)}"
    if base.is_dir():
        others = sorted((p for p in base.iterdir() if p.is_dir() and p != folder), key=lambda p: p.stat().st_mtime)
        for old in others[: max(0, len(others) + 1 - KEEP_CASES)]:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def case_embeddings(model: Any, imgs: np.ndarray, root: Path | None, batch_size: int | None = None) -> SliceEmbeddings:
    """The case's `SliceEmbeddings` backed by a `CaseStore` (on disk under `root`, else in memory)."""
    sm = slice_model(model)
    embeddings = SliceEmbeddings(sm, imgs, batch_size)
    device = sm.model.device if isinstance(sm, TorchSlices) else None
    embeddings.cache = CaseStore(None if root is None else case_folder(root, sm, imgs), device)
    return embeddings


class ClassVolume:
    """One class's (D, H, W) mask and the operations of the rule in the module docstring."""

    def __init__(self, embeddings: SliceEmbeddings, prompts: ClassPrompts, label: int, mask: np.ndarray) -> None:
        self.emb, self.prompts, self.label, self.mask = embeddings, prompts, label, mask
        self.sm: SliceModel = embeddings.model
        self.store: CaseStore | None = embeddings.cache if isinstance(embeddings.cache, CaseStore) else None
        d = mask.shape[0]
        box = prompts.box
        object_zs = [z for (z, _, _), positive in prompts.clicks if positive]
        self.lo = min([box.z_min, *object_zs]) if box else 0
        self.hi = max([box.z_max, *object_zs]) if box else d - 1

    def _clicks_on(self, z: int) -> tuple[np.ndarray, np.ndarray]:
        """(Nx2 x, y in the model's frame, N labels) of every click of the class on slice z."""
        h, w = self.mask.shape[1:]
        on = [((x, y), positive) for (cz, y, x), positive in self.prompts.clicks if cz == z]
        xy = np.array([p for p, _ in on], np.float64).reshape(-1, 2)
        frame = self.sm.transform.apply_coords(xy, (h, w)).astype(np.float32)
        return frame, np.array([int(positive) for _, positive in on], np.int64)

    def _box(self, z: int, source: np.ndarray | None, points: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
        """Frame box of `source` (a mask) taking in the object clicks, widened by BOX_MARGIN."""
        box = None if source is None else box_from_neighbour(self.sm, source, self.label)
        if box is None and self.prompts.box is not None and self.lo <= z <= self.hi:
            h, w = self.mask.shape[1:]
            box = self.sm.transform.apply_boxes(np.array([self.prompts.box.box2d], np.float64), (h, w))[0]
        positive = points[labels == 1]
        if len(positive):
            side = self.sm.img_size
            lo, hi = positive.min(axis=0) - BOX_MARGIN, positive.max(axis=0) + BOX_MARGIN
            if box is not None:
                lo, hi = np.minimum(lo, box[:2]), np.maximum(hi, box[2:])
            box = np.clip(np.concatenate([lo, hi]), 0, side)
        return None if box is None else np.asarray(box, np.float32)

    def _nearest_labelled(self, z: int) -> np.ndarray | None:
        for gap in range(NEAR_SLICES + 1):
            for n in (z - gap, z + gap):
                if 0 <= n < self.mask.shape[0] and self.mask[n].any():
                    return self.mask[n]
        return None

    def _decode(self, z: int, prompt: FramePrompt, upcoming: list[int]) -> Any:
        h, w = self.mask.shape[1:]
        return self.sm.decode_prompts(self.emb.get(z, upcoming), prompt, self.emb.input_size, (h, w))

    def correct(self, z: int) -> None:
        """Step 2 and 3 of the rule for a click on slice z."""
        points, labels = self._clicks_on(z)
        before = self.mask[z]
        logits = self.store.logits(self.label, z, before) if self.store is not None and before.any() else None
        box = self._box(z, self._nearest_labelled(z), points, labels)
        decoded = self._decode(z, FramePrompt(points, labels, box, logits), [])
        zs = np.nonzero(self.mask.reshape(self.mask.shape[0], -1).any(axis=1))[0]
        centre = float(np.mean(zs)) if len(zs) else float(z)
        if not self._obeys(z, decoded.mask) and box is not None:
            # models trained on boxes alone (LiteMedSAM) may ignore clicks: the box alone, grown to them
            decoded = self._decode(z, FramePrompt(points[:0], labels[:0], box), [])
        mask = decoded.mask if self._obeys(z, decoded.mask) else self._edited(z, before)
        self.mask[z] = mask
        if self.store is not None:
            self.store.keep_logits(self.label, z, decoded.mask, decoded.logits)
        for step in (1, -1):
            # outwards only: a slice near an end has a small box, which would shrink the middle slices
            if (z - centre) * step >= 0 or abs(z - centre) <= 1:
                self.spread(z, step, away=(z - centre) * step >= 0)

    def _obeys(self, z: int, mask: np.ndarray) -> bool:
        """Whether a slice's mask holds every object click of the class on it and no background one."""
        return all(mask[y, x] == positive for (cz, y, x), positive in self.prompts.clicks if cz == z)

    def _edited(self, z: int, before: np.ndarray) -> np.ndarray:
        """The last resort when no decode obeys the clicks: the old mask with a disc of EDIT_RADIUS
        pixels added at each object click and removed at each background click."""
        mask = before.copy()
        yy, xx = np.ogrid[: mask.shape[0], : mask.shape[1]]
        for (cz, y, x), positive in self.prompts.clicks:
            if cz == z:
                mask[(yy - y) ** 2 + (xx - x) ** 2 <= EDIT_RADIUS**2] = positive
        return mask

    def spread(self, z: int, step: int, away: bool) -> None:
        n = z + step
        while self.lo <= n <= self.hi:
            source = self.mask[n - step]
            points, labels = self._clicks_on(n)
            if source.any():
                box = self._box(n, source, points, labels)
                upcoming = list(range(n + step, self.hi + 1 if step > 0 else self.lo - 1, step))
                new = self._decode(n, FramePrompt(points, labels, box), upcoming).mask
            elif away and not (labels == 1).any():
                new = np.zeros_like(source)
            else:
                return
            if _agree(new, self.mask[n]):
                return
            self.mask[n] = new
            n += step

    def clear_outside(self) -> None:
        self.mask[: self.lo] = False
        self.mask[self.hi + 1 :] = False


def _from_box(embeddings: SliceEmbeddings, prompts: ClassPrompts, label: int) -> np.ndarray:
    box = prompts.box
    d, h, w = embeddings.stack.shape[:3]
    if box is None:
        return np.zeros((d, h, w), bool)
    x0, y0, x1, y1 = box.box2d
    sm = embeddings.model
    with slice_workers(sm) as pool:
        return segment_box3d(sm, embeddings, (x0, y0, box.z_min, x1, y1, box.z_max), label, pool, middle=box.z_mid)


def segment_class(
    embeddings: SliceEmbeddings, prompts: ClassPrompts, label: int, previous: np.ndarray | None = None
) -> np.ndarray:
    """One class's (D, H, W) bool mask by the rule: from `previous` (the last answer's mask of the
    class) corrected at the slices of its newest clicks, or, without one, from its box corrected at
    the slices of all its clicks in the order they came. The one path for `kdsam predict` and the
    page's volume clicks."""
    if previous is not None:
        start, new = previous, prompts.clicks[len(prompts.clicks) - prompts.newest :]
    else:
        start, new = _from_box(embeddings, prompts, label), prompts.clicks
    volume = ClassVolume(embeddings, prompts, label, start)
    for z in dict.fromkeys(z for (z, _, _), _ in new):
        volume.correct(z)
    if prompts.box is not None:
        volume.clear_outside()
    return volume.mask


def segment_case25(embeddings: SliceEmbeddings, case: Case25) -> np.ndarray:
    """The case's `segs` (DxHxW uint8, class i -> label i + 1, later classes over earlier ones)."""
    labels = np.zeros(case.imgs.shape, np.uint8)
    for label, prompts in enumerate(case.classes, start=1):
        previous = None if case.prev_pred is None else case.prev_pred == label
        labels[segment_class(embeddings, prompts, label, previous)] = label
    return labels


def answer_case25(model: Any, path: Path, output: Path, batch_size: int | None = None) -> dict[str, Any]:
    """Read, segment and write one CVPR25 case (`segs` in `output`), with the slice embeddings kept
    in $KDSAM_CACHE across the evaluator's calls; the record's fields."""
    from kdsam.infer.challenge import write_segs
    from kdsam.utils.cache_dir import default_cache_dir

    case = read_case25(path)
    segs = segment_case25(case_embeddings(model, case.imgs, default_cache_dir(), batch_size), case)
    write_segs(output, segs)
    return {
        "protocol": "cvpr25",
        "classes": len(case.classes),
        "clicks": [len(c.clicks) for c in case.classes],
        "previous_answer": case.prev_pred is not None,
        "shape": list(segs.shape),
        "foreground": int((segs > 0).sum()),
        "intensity": {"method": "none", "source": "npz uint8"},
    }
