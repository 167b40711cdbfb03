"""CVPR 2024 "Segment Anything in Medical Images on Laptop" cases, as CVPR24_LiteMedSAM_infer.py runs them.

A case is an npz file. 2D: `imgs` HxWx3 uint8 and `boxes` Nx4 (x_min, y_min, x_max, y_max). 3D, when
the file name starts with "3D": `imgs` DxHxW uint8, `boxes` Nx6 (x_min, y_min, z_min, x_max, y_max,
z_max; inclusive voxel indices) and `spacing`. The answer is an npz of the same name holding `segs`,
uint8 labels of the image's shape: box i -> label i + 1, later boxes over earlier ones.
2D cases embed the image once and decode every box; 3D cases follow kdsam.infer.volume.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.errors import BadFileError
from kdsam.infer.volume import segment_stack
from kdsam.utils.atomic import atomic_path


@dataclass
class Case:
    """One challenge case as read from its npz."""

    path: Path
    imgs: np.ndarray
    boxes: np.ndarray
    spacing: tuple[float, ...] | None

    @property
    def is_3d(self) -> bool:
        return is_3d_name(self.path.name)


def is_3d_name(name: str) -> bool:
    """The challenge marks 3D cases by name alone."""
    return name.startswith("3D")


def read_case(path: str | Path) -> Case:
    """Load and check a case: the shapes the challenge specifies, else a BadFileError naming the file."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "imgs" not in npz or "boxes" not in npz:
                raise BadFileError(f"{path}: a challenge npz needs 'imgs' and 'boxes' (has {', '.join(npz.files)})")
            imgs, boxes = npz["imgs"], np.asarray(npz["boxes"])
            spacing = tuple(float(v) for v in npz["spacing"]) if "spacing" in npz else None
    except (OSError, ValueError, EOFError) as err:
        raise BadFileError(f"{path}: unreadable npz ({err})") from err
    three_d = is_3d_name(path.name)
    want_img, want_box = ((3, "DxHxW"), 6) if three_d else ((3, "HxWx3"), 4)
    if imgs.ndim != want_img[0] or (not three_d and imgs.shape[2] != 3):
        raise BadFileError(f"{path}: imgs has shape {imgs.shape}; a {'3D' if three_d else '2D'} case is {want_img[1]}")
    if boxes.size % want_box or boxes.size == 0:
        raise BadFileError(f"{path}: boxes has shape {boxes.shape}; expected Nx{want_box}")
    if imgs.dtype != np.uint8:
        if imgs.min() < 0 or imgs.max() > 255:
            raise BadFileError(f"{path}: imgs range {imgs.min()}..{imgs.max()}; the challenge stores 0..255")
        imgs = imgs.astype(np.uint8)
    return Case(path, imgs, boxes.reshape(-1, want_box), spacing)


def labels_2d(model: Any, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 and Nx4 boxes -> HxW uint8 labels, one embedding for all boxes. `model`: a KDSam or
    an ONNX export's predictor."""
    from kdsam.predictor import predictor_of

    predictor = predictor_of(model)
    predictor.set_image(image)
    labels = np.zeros(image.shape[:2], dtype=np.uint8)
    if len(boxes):
        masks, _, _ = predictor.predict_boxes(np.asarray(boxes, dtype=np.float64))
        for i, mask in enumerate(masks[:, 0], start=1):
            labels[mask] = i
    return labels


def segment_case(model: Any, case: Case, batch_size: int | None = None) -> np.ndarray:
    """The case's `segs`."""
    if case.is_3d:
        try:
            return segment_stack(model, case.imgs, case.boxes, batch_size, where="box")
        except ValueError as err:
            raise BadFileError(f"{case.path}: {err}") from err
    return labels_2d(model, case.imgs, case.boxes)


def write_segs(path: str | Path, segs: np.ndarray) -> None:
    """`segs` in a compressed npz, atomically (a killed run leaves no half case to be skipped later)."""
    with atomic_path(path) as tmp, tmp.open("wb") as f:
        np.savez_compressed(f, segs=segs.astype(np.uint8))
