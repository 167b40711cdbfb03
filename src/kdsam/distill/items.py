"""Training items, streamed: an index of the usable images, then a torch Dataset that decodes and
preprocesses each image when a batch asks for it and reads its teacher targets from the disk cache.

Nothing grows with the dataset but the index (a name, a key and a few boxes per image), so a
million-image corpus trains in the memory of one batch and the loader's prefetch.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything.modeling import Sam
from tqdm import tqdm

from kdsam.data.dataset import Dataset, resize_nearest
from kdsam.data.prompts import box_around, jitter_boxes, objects, random_boxes
from kdsam.distill.cache import LOW_RES, EmbeddingCache, _load_checked, boxes_key, image_key
from kdsam.distill.process import TrainingProcess
from kdsam.distill.prompting import PromptMix
from kdsam.errors import BadFileError
from kdsam.models.sam import KDSam

log = logging.getLogger("kdsam")

AUGMENTATIONS = ("flip", "scale", "intensity")


@dataclass(frozen=True)
class Entry:
    """One usable training image: where it is in the dataset, its content key and its box prompts.

    kind "object": boxes around the mask's objects; "background" (stage 1 only): a volume slice
    without foreground, no box; "unlabeled" (stage 1 only): seeded random boxes, no mask."""

    index: int
    name: str
    key: str
    boxes: np.ndarray  # Kx4 XYXY in decoded pixels
    kind: str = "object"


@dataclass
class Index:
    """The usable images of a split (all ranks' shares, in dataset order) and the skipped ones."""

    entries: list[Entry]
    skipped: list[dict[str, str]]  # {"name", "reason"}
    computed: int = 0  # images whose cache entries this call computed
    reused: int = 0
    background_left_out: int = 0  # volume slices without foreground not drawn (see `background`)

    def summary(self) -> dict[str, Any]:
        kinds = {k: sum(e.kind == k for e in self.entries) for k in ("object", "background", "unlabeled")}
        return {
            "n": len(self.entries),
            "n_by_kind": kinds,
            "background_slices_left_out": self.background_left_out,
            "skipped": len(self.skipped),
            "skipped_files": self.skipped,
        }


def drawn(seed: int, name: str, fraction: float) -> bool:
    """A seeded, order-free draw of `fraction` of the names (the same ones on every rank and rerun)."""
    if fraction <= 0:
        return False
    u = int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:12], 16) / 16**12
    return u < fraction


def _entry(i: int, name: str, meta: dict[str, Any], sample: Any, min_area: int) -> Entry | str:
    """The entry of one decoded sample, or why it is skipped."""
    key = image_key(sample.image)
    if meta.get("unlabeled"):
        rng = np.random.default_rng(int(key[:12], 16))
        return Entry(i, name, key, random_boxes(sample.image.shape[:2], rng), "unlabeled")
    comps = objects(sample.target, min_area)
    if comps:
        return Entry(i, name, key, np.stack([box_around(c) for c in comps]))
    if meta.get("foreground") is False:
        return Entry(i, name, key, np.zeros((0, 4), np.float32), "background")
    return "empty mask: no box prompt is defined"


def low_res_target(model: KDSam, mask: np.ndarray) -> torch.Tensor:
    """A mask in the model's padded square frame, at the 256x256 resolution of SAM's mask logits."""
    transform = model.transform()
    h, w = transform.get_preprocess_shape(*mask.shape, model.img_size)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    t = F.interpolate(t, size=(h, w), mode="area")
    t = F.pad(t, (0, model.img_size - w, 0, model.img_size - h))
    return F.interpolate(t, size=(LOW_RES, LOW_RES), mode="area")[0]


def index_dataset(
    dataset: Dataset,
    process: TrainingProcess,
    cache: EmbeddingCache | None = None,
    *,
    logits: bool = False,
    batch_size: int = 8,
    min_area: int = 100,
    background: float = 0.0,
    seed: int = 0,
) -> Index:
    """Decode this rank's share of the images once: note the usable ones (readable, with a non-empty
    mask) and fill the cache with what it lacks (embeddings, batched; teacher mask logits for each
    box when `logits`). Every rank gets the whole index back.

    Volume slices without foreground are left out (never decoded), except a seeded `background`
    fraction of them, kept for stage 1's embedding term. Unlabelled images get seeded random boxes.
    """
    entries: list[Entry] = []
    skipped: list[dict[str, str]] = []
    pending: list[tuple[Entry, np.ndarray]] = []
    computed = reused = left_out = 0
    mine = process.shard(range(len(dataset)))
    desc = f"indexing {dataset.split or 'data'}" + (" + teacher cache" if cache is not None else "")
    for i in tqdm(mine, desc=desc, unit="image", disable=not process.is_main):
        record = dataset.records[i]
        name = record.name
        background_slice = record.meta.get("foreground") is False and not record.meta.get("unlabeled")
        if background_slice and not drawn(seed, name, background):
            left_out += 1
            continue
        try:
            sample = dataset[i]
        except BadFileError as err:
            skipped.append({"name": name, "reason": str(err)})
            continue
        entry = _entry(i, name, record.meta, sample, min_area)
        if isinstance(entry, str):
            skipped.append({"name": name, "reason": entry})
            continue
        entries.append(entry)
        if cache is None:
            continue
        if cache.has(entry.key, entry.boxes if logits and len(entry.boxes) else None):
            reused += 1
            continue
        pending.append((entry, sample.image))
        if len(pending) >= batch_size:
            computed += _fill(cache, pending, logits)
    if cache is not None and pending:
        computed += _fill(cache, pending, logits)
    shares = process.gather((entries, skipped, computed, reused, left_out))
    return Index(
        sorted((e for s in shares for e in s[0]), key=lambda e: e.index),
        [k for s in shares for k in s[1]],
        sum(s[2] for s in shares),
        sum(s[3] for s in shares),
        sum(s[4] for s in shares),
    )


def _fill(cache: EmbeddingCache, pending: list[tuple[Entry, np.ndarray]], logits: bool) -> int:
    """Compute and store the missing entries of a batch of images; empties `pending`."""
    embs = {e.key: cache.load(e.key) for e, _ in pending}
    todo = [(e, im) for e, im in pending if embs[e.key] is None]
    if todo:
        for (entry, _), emb in zip(todo, cache.compute([im for _, im in todo]), strict=True):
            cache.save(entry.key, emb)
            embs[entry.key] = emb
    if logits:
        for entry, image in pending:
            if len(entry.boxes) and cache.load_logits(entry.key, entry.boxes) is None:
                out = cache.compute_logits(embs[entry.key], entry.boxes, image.shape[:2])
                cache.save_logits(entry.key, entry.boxes, out)
    n = len(pending)
    pending.clear()
    return n


class _Frame(torch.nn.Module):
    """Stands in for an image encoder where only its input side is needed."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size


def preprocessor(model: KDSam) -> KDSam:
    """A CPU copy of `model` without its networks: everything `prepare` and the box transform need,
    and cheap to send to each loader worker."""
    sam = Sam(
        image_encoder=_Frame(model.img_size),
        prompt_encoder=torch.nn.Module(),
        mask_decoder=torch.nn.Module(),
        pixel_mean=model.pixel_mean.flatten().tolist(),
        pixel_std=model.pixel_std.flatten().tolist(),
    )
    return KDSam(sam, name=model.name, normalization=model.normalization, resize_mode=model.resize_mode)


def augment(image: np.ndarray, mask: np.ndarray, kinds: Sequence[str], rng: np.random.Generator):
    """Flip, zoom (crop or pad) and intensity changes, applied to image and mask (or label map)
    together; box prompts are derived afterwards, so they move with the mask."""
    if "flip" in kinds:
        if rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
    if "scale" in kinds:
        image, mask = _zoom(image, mask, float(rng.uniform(0.8, 1.25)), rng)
    if "intensity" in kinds:
        gain, bias, gamma = rng.uniform(0.8, 1.2), rng.uniform(-20, 20), rng.uniform(0.8, 1.25)
        x = np.clip(image.astype(np.float32) * gain + bias, 0, 255) / 255.0
        image = (np.power(x, gamma) * 255).round().astype(np.uint8)
    return np.ascontiguousarray(image), np.ascontiguousarray(mask)


def _zoom(image: np.ndarray, mask: np.ndarray, s: float, rng: np.random.Generator):
    """s > 1: a random window 1/s of the size, resized back up (zoom in); s < 1: the image placed at
    a random spot of a larger black canvas (zoom out). A window that loses the object is not used."""
    h, w = mask.shape
    if s >= 1:
        ch, cw = max(int(h / s), 1), max(int(w / s), 1)
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        if not mask[y : y + ch, x : x + cw].any():
            return image, mask
        image = np.asarray(Image.fromarray(image[y : y + ch, x : x + cw]).resize((w, h), Image.Resampling.BILINEAR))
        return image, resize_nearest(mask[y : y + ch, x : x + cw], (h, w))
    H, W = int(h / s), int(w / s)
    y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
    big_image = np.zeros((H, W, 3), np.uint8)
    big_mask = np.zeros((H, W), mask.dtype)
    big_image[y : y + h, x : x + w], big_mask[y : y + h, x : x + w] = image, mask
    return big_image, big_mask


class TrainingSet(torch.utils.data.Dataset):
    """Items of one split for either stage, decoded on access. Each item is a dict of tensors:

    x (3xSxS student input) or emb (256x64x64 frozen student embedding, stage 2 with a frozen
    encoder), box (4, student prompt frame) and target (1x256x256) of one component chosen at
    random, and for stage 1 teacher_emb (256x64x64 fp16), teacher_box and teacher_logits. With a
    prompt mix (stage 2), also the drawn prompt plan: prompt_kind, prompt_clicks, prompt_point.

    The choice of component, the box jitter and the augmentations draw from a generator seeded by
    (seed, epoch, item), so an item is the same whichever worker or rank loads it: results do not
    depend on the number of workers or processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        index: Index,
        student: KDSam,
        *,
        seed: int = 0,
        teacher: KDSam | None = None,
        teacher_cache: Path | None = None,
        logits: bool = False,
        frozen_cache: Path | None = None,
        jitter: bool = False,
        augmentations: Sequence[str] = (),
        min_area: int = 100,
        prompt_mix: PromptMix | None = None,
    ) -> None:
        self.dataset = dataset
        self.entries = index.entries
        self.student = preprocessor(student)
        self.teacher = preprocessor(teacher) if teacher is not None else None
        self.teacher_cache = teacher_cache
        self.logits = logits
        self.frozen_cache = frozen_cache
        self.jitter = jitter
        self.augmentations = tuple(augmentations)
        self.min_area = min_area
        self.prompt_mix = prompt_mix
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        entry = self.entries[i]
        rng = np.random.default_rng([self.seed, self.epoch, entry.index])
        sample = self.dataset[entry.index]
        shape = sample.image.shape[:2]
        if entry.kind == "object":
            item, image, k = self._object_item(entry, sample, rng)
        else:  # stage 1 only: no object to prompt or score, a random box (unlabelled) or none
            k = int(rng.integers(len(entry.boxes))) if len(entry.boxes) else None
            item = {"box": torch.zeros(4), "target": torch.zeros(1, LOW_RES, LOW_RES)}
            image = sample.image
        item["index"] = torch.tensor(entry.index)
        item["has_box"] = torch.tensor(k is not None)
        if self.frozen_cache is not None and not self.augmentations:
            item["emb"] = _required(self.frozen_cache / f"{entry.key}.pt", (256, 64, 64))
        else:
            item["x"] = self.student.prepare(image)[0][0]
        if self.teacher_cache is not None:
            item["teacher_emb"] = _required(self.teacher_cache / f"{entry.key}.pt", (256, 64, 64))
            item.update(self._teacher_prompt(entry, k, shape))
        return item

    def _object_item(self, entry: Entry, sample: Any, rng: np.random.Generator):
        """(item with the student's box and target of one object, the image it goes with, the
        object's index among the entry's boxes)."""
        image, mask = sample.image, sample.target
        comps = None
        if self.augmentations:
            aug_image, aug_mask = augment(image, mask, self.augmentations, rng)
            comps = objects(aug_mask, self.min_area) or None
            if comps is not None:
                image, mask = aug_image, aug_mask
        comps = comps or objects(mask, self.min_area)
        k = int(rng.integers(len(comps)))
        box = box_around(comps[k])[None]
        if self.jitter:
            box = jitter_boxes(box, mask.shape, rng)
        item = {
            "box": self.student.boxes_to_prompt_frame(torch.from_numpy(box), mask.shape)[0],
            "target": low_res_target(self.student, comps[k]),
        }
        if self.prompt_mix is not None:
            plan = self.prompt_mix.draw(item["target"][0].numpy() > 0.5, rng)
            item.update(
                prompt_kind=torch.tensor(plan.kind),
                prompt_clicks=torch.tensor(plan.clicks),
                prompt_point=torch.tensor(plan.point),
            )
        return item, image, k

    def _teacher_prompt(self, entry: Entry, k: int | None, shape: tuple[int, int]) -> dict[str, torch.Tensor]:
        """The teacher's box k (its frame) and, for the decoder term, its cached mask logits; zeros
        where the item has no box (`has_box` is then False and the term leaves it out)."""
        if k is None:
            out = {"teacher_box": torch.zeros(4)}
            if self.logits:
                out["teacher_logits"] = torch.zeros(1, LOW_RES, LOW_RES, dtype=torch.float16)
            return out
        tbox = torch.from_numpy(entry.boxes[k : k + 1])
        out = {"teacher_box": self.teacher.boxes_to_prompt_frame(tbox, shape)[0]}
        if self.logits:
            path = self.teacher_cache / f"{entry.key}-logits-{boxes_key(entry.boxes)}.pt"
            out["teacher_logits"] = _required(path, (len(entry.boxes), 1, LOW_RES, LOW_RES))[k]
        return out


def _required(path: Path, shape: tuple[int, ...]) -> torch.Tensor:
    t = _load_checked(path, shape)
    if t is None:
        raise BadFileError(f"{path}: cache entry missing or damaged during training; rerun to recompute it")
    return t
