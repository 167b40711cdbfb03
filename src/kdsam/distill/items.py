"""Training items: each image decoded and preprocessed once, then reused every epoch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from kdsam.data.dataset import Dataset
from kdsam.data.prompts import box_around, components, jitter_boxes
from kdsam.distill.cache import TeacherCache
from kdsam.models.sam import KDSam

LOW_RES = 256  # side of SAM's low-resolution mask logits


@dataclass
class Part:
    """One box prompt and the mask it should produce (one connected component)."""

    box: np.ndarray  # 4, XYXY in original pixels
    target: torch.Tensor  # 1x256x256 float, the component in the low-res frame of the student
    teacher_logits: torch.Tensor | None = None  # 1x256x256 fp16, the teacher's answer to this box


@dataclass
class Item:
    name: str
    original_size: tuple[int, int]
    student_input: torch.Tensor  # 3xSxS fp16, preprocessed and padded
    parts: list[Part]
    teacher_emb: torch.Tensor | None = None  # 256x64x64 fp16, stage 1 only


def low_res_target(model: KDSam, mask: np.ndarray) -> torch.Tensor:
    """A mask in the model's padded square frame, at the 256x256 resolution of SAM's mask logits."""
    transform = model.transform()
    h, w = transform.get_preprocess_shape(*mask.shape, model.img_size)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    t = F.interpolate(t, size=(h, w), mode="area")
    t = F.pad(t, (0, model.img_size - w, 0, model.img_size - h))
    return F.interpolate(t, size=(LOW_RES, LOW_RES), mode="area")[0]


def make_items(dataset: Dataset, student: KDSam, min_area: int = 100, cache: TeacherCache | None = None) -> list[Item]:
    """Decode every readable sample once; empty masks are skipped (no box prompt is defined).

    With a teacher cache, each item also gets its teacher embedding while its pixels are at hand,
    so no more than one decoded image is ever held in memory.
    """
    items = []
    for sample in tqdm(dataset.samples(), total=len(dataset), desc=f"preparing {dataset.split or 'data'}"):
        comps = components(sample.mask, min_area)
        if not comps:
            continue
        x, _ = student.prepare(sample.image)
        parts = [Part(box_around(c), low_res_target(student, c)) for c in comps]
        emb = cache.get(sample.image) if cache is not None else None
        items.append(Item(sample.name, sample.mask.shape, x[0].to(torch.float16), parts, emb))
    return items


def pick_parts(items: Sequence[Item], rng: np.random.Generator) -> list[Part]:
    """One random part (box prompt and its mask) per item."""
    return [item.parts[int(rng.integers(len(item.parts)))] for item in items]


def prompt_boxes(
    items: Sequence[Item], parts: Sequence[Part], model: KDSam, rng: np.random.Generator | None = None
) -> torch.Tensor:
    """Bx4 boxes of `parts` in `model`'s prompt frame, jittered when an rng is given (training)."""
    boxes = []
    for item, part in zip(items, parts, strict=True):
        box = part.box[None]
        if rng is not None:
            box = jitter_boxes(box, item.original_size, rng)
        boxes.append(model.boxes_to_prompt_frame(torch.from_numpy(box), item.original_size))
    return torch.cat(boxes)
