"""CVPR 2025 "Foundation Models for Interactive 3D Biomedical Image Segmentation" cases, as its
evaluator (CVPR25_iter_eval.py) writes them for each of its six calls of `predict.sh`.

A case is an npz: `imgs` DxHxW uint8, `spacing`, and optionally `boxes` (one dict per class:
z_min, z_max, z_mid and the 2D box z_mid_x_min, z_mid_y_min, z_mid_x_max, z_mid_y_max on slice
z_mid; x is the column, y the row), `clicks` (one {"fg": [...], "bg": [...]} per class, each click
a voxel index [z, y, x] in the array order of `imgs`), `clicks_order` (per class, "fg"/"bg" in the
order the clicks came, None for a step without one) and `prev_pred` (the previous step's `segs`).
`boxes` and `clicks` are pickled object arrays: they are read by `kdsam.infer.safe_npz`. A case is
told from a CVPR24 one by its content (no Nx4/Nx6 number array in `boxes`), since its name starts
with the modality, not "3D". The answer: `segs`, DxHxW uint8, class i -> label i + 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.errors import BadFileError
from kdsam.infer.safe_npz import load_npz, member_dtypes

BOX_KEYS = ("z_min", "z_max", "z_mid", "z_mid_x_min", "z_mid_y_min", "z_mid_x_max", "z_mid_y_max")
Voxel = tuple[int, int, int]  # (z, y, x)


@dataclass(frozen=True)
class Box3D:
    """A class's box: its z range and the 2D box (x0, y0, x1, y1) lying on slice z_mid."""

    z_min: int
    z_max: int
    z_mid: int
    box2d: tuple[float, float, float, float]


@dataclass
class ClassPrompts:
    """Everything given for one class: its box (or None) and its clicks in the order they came."""

    box: Box3D | None = None
    clicks: list[tuple[Voxel, bool]] = field(default_factory=list)  # ((z, y, x), positive)
    newest: int = 0  # how many of `clicks` (the last ones) came at the latest step

    def slices_clicked(self) -> list[int]:
        return sorted({z for (z, _, _), _ in self.clicks})


@dataclass
class Case25:
    """One CVPR25 case as read from its npz."""

    path: Path
    imgs: np.ndarray
    spacing: tuple[float, ...] | None
    classes: list[ClassPrompts]
    prev_pred: np.ndarray | None


def is_cvpr25(dtypes: dict[str, np.dtype]) -> bool:
    """Whether an npz (its arrays' dtypes by name) is a CVPR25 case: an image without the CVPR24
    number array of boxes (Nx4 / Nx6), or with clicks or a previous answer."""
    boxes = dtypes.get("boxes")
    return "imgs" in dtypes and (boxes is None or boxes.hasobject or "clicks" in dtypes or "prev_pred" in dtypes)


def is_cvpr25_file(path: Path) -> bool:
    """`is_cvpr25` from the npz's headers alone (cheap: decides before the case is read)."""
    return is_cvpr25(member_dtypes(path))


def _number(value: Any, what: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = float("nan")
    if not np.isfinite(number):
        raise ValueError(f"{what} is {value!r}, not a number")
    return number


def _box(entry: Any, i: int, shape: tuple[int, int, int]) -> Box3D:
    if not isinstance(entry, dict) or any(k not in entry for k in BOX_KEYS):
        raise ValueError(f"boxes[{i}] must be a dict with {', '.join(BOX_KEYS)}")
    v = {k: _number(entry[k], f"boxes[{i}][{k!r}]") for k in BOX_KEYS}
    d, h, w = shape
    z0, z1, zm = round(v["z_min"]), round(v["z_max"]), round(v["z_mid"])
    if z0 > z1:
        raise ValueError(f"boxes[{i}]: z_min {z0} > z_max {z1}")
    if not (z0 >= 0 and z1 < d and z0 <= zm <= z1):
        raise ValueError(
            f"boxes[{i}]: z_min {z0}, z_mid {zm}, z_max {z1} must lie in 0..{d - 1} with z_min <= z_mid <= z_max"
        )
    x0, y0, x1, y1 = v["z_mid_x_min"], v["z_mid_y_min"], v["z_mid_x_max"], v["z_mid_y_max"]
    if not (0 <= x0 <= x1 <= w and 0 <= y0 <= y1 <= h):
        raise ValueError(f"boxes[{i}]: 2D box x {x0:g}..{x1:g}, y {y0:g}..{y1:g} is not inside the {w}x{h} slices")
    return Box3D(z0, z1, zm, (x0, y0, x1, y1))


def _voxel(point: Any, what: str, shape: tuple[int, int, int]) -> Voxel:
    values = list(np.asarray(point, dtype=object).reshape(-1)) if point is not None else []
    if len(values) != 3:
        raise ValueError(f"{what} is {point!r}; a click is [z, y, x]")
    z, y, x = (round(_number(v, what)) for v in values)
    d, h, w = shape
    if not (0 <= z < d and 0 <= y < h and 0 <= x < w):
        raise ValueError(f"{what} [z, y, x] = [{z}, {y}, {x}] is outside the volume (D, H, W) = {shape}")
    return z, y, x


def _ordered(fg: list[Voxel], bg: list[Voxel], order: Sequence[Any] | None, i: int) -> tuple[list, int]:
    """Clicks in the order they came, and how many came at the last step (the last entry of
    `clicks_order`; without one, every click counts as new)."""
    if order is None:
        return [(p, True) for p in fg] + [(p, False) for p in bg], len(fg) + len(bg)
    steps = [None if o is None else str(o) for o in order]
    if any(s not in (None, "fg", "bg") for s in steps) or steps.count("fg") != len(fg) or steps.count("bg") != len(bg):
        raise ValueError(f"clicks_order[{i}] {steps} does not match clicks[{i}] ({len(fg)} fg, {len(bg)} bg)")
    queues = {"fg": iter(fg), "bg": iter(bg)}
    ordered = [(next(queues[s]), s == "fg") for s in steps if s is not None]
    return ordered, int(bool(steps) and steps[-1] is not None)


def _list(data: dict[str, np.ndarray], key: str) -> list[Any] | None:
    if key not in data:
        return None
    value = data[key]
    return list(value.tolist()) if value.ndim else [value.item()]


def parse_case(path: Path, data: dict[str, np.ndarray]) -> Case25:
    """Check a CVPR25 case's arrays; ValueError saying what is wrong (the caller names the file)."""
    imgs = data.get("imgs")
    if imgs is None or imgs.ndim != 3 or imgs.dtype.hasobject:
        raise ValueError(f"imgs has shape {None if imgs is None else imgs.shape}; a CVPR25 case is DxHxW")
    if imgs.dtype != np.uint8:
        if imgs.min() < 0 or imgs.max() > 255:
            raise ValueError(f"imgs range {imgs.min()}..{imgs.max()}; the challenge stores 0..255")
        imgs = imgs.astype(np.uint8)
    shape = tuple(int(s) for s in imgs.shape)
    boxes = [_box(b, i, shape) for i, b in enumerate(_list(data, "boxes") or [])]
    clicks = _list(data, "clicks") or []
    order = _list(data, "clicks_order")
    if boxes and len(clicks) > len(boxes):
        raise ValueError(f"clicks has {len(clicks)} classes but boxes only {len(boxes)}")
    if order is not None and len(order) < len(clicks):
        raise ValueError(f"clicks_order has {len(order)} classes but clicks {len(clicks)}")
    classes = [ClassPrompts(b) for b in boxes] + [ClassPrompts() for _ in range(len(clicks) - len(boxes))]
    for i, entry in enumerate(clicks):
        if not isinstance(entry, dict) or not set(entry) <= {"fg", "bg"}:
            raise ValueError(f'clicks[{i}] must be a dict {{"fg": [...], "bg": [...]}}')
        fg, bg = ([_voxel(p, f"clicks[{i}][{k!r}]", shape) for p in entry.get(k) or []] for k in ("fg", "bg"))
        cls_order = None if order is None or order[i] is None else list(order[i])
        classes[i].clicks, classes[i].newest = _ordered(fg, bg, cls_order, i)
    prev = data.get("prev_pred")
    if prev is not None and tuple(prev.shape) != shape:
        raise ValueError(f"prev_pred has shape {tuple(prev.shape)} but imgs {shape}")
    if not classes:
        raise ValueError("neither boxes nor clicks: nothing to segment")
    spacing = tuple(float(v) for v in data["spacing"]) if "spacing" in data else None
    return Case25(path, imgs, spacing, classes, None if prev is None else np.asarray(prev))


def read_case25(path: Path) -> Case25:
    """The case in `path` (object arrays read by `load_npz`), checked; any error is one line naming
    the file (BadFileError)."""
    data = load_npz(path)
    try:
        return parse_case(path, data)
    except (ValueError, TypeError) as err:
        raise BadFileError(f"{path}: {err}") from err
