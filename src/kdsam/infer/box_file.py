"""`kdsam predict --boxes`: one JSON table giving each file of a folder (or each series of a PACS
study) its own boxes, {"<file name or stem>": [[4 or 6 numbers], ...]}."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kdsam.errors import KdsamError
from kdsam.infer.files import Prompts, stem

BoxTable = dict[str, list[list[float]]]


def read_box_file(path: Path) -> BoxTable:
    """The table, {name: [[...], ...]}; one line naming the file when it is not that."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError("the top level must be an object {name: [[...], ...]}")
        return {str(k): [[float(x) for x in box] for box in v] for k, v in data.items()}
    except (OSError, ValueError, TypeError) as err:
        raise KdsamError(
            f'{path}: not a boxes JSON ({err}); write {{"case.nii.gz": [[x0, y0, z0, x1, y1, z1]]}}'
        ) from err


def prompts_for(path: Path, table: BoxTable | None, default: Prompts) -> Prompts:
    """A file's boxes from the table (by file name, then stem: none when it is not listed), or the
    command line's `default` when there is no table; 4 numbers a 2D box, 6 a 3D one."""
    if table is None:
        return default
    boxes = table.get(path.name, table.get(stem(path)))
    if boxes is None:
        return Prompts()
    b2 = [b for b in boxes if len(b) == 4]
    b3 = [b for b in boxes if len(b) == 6]
    if len(b2) + len(b3) != len(boxes):
        raise KdsamError(f"{path.name}: its --boxes entries must have 4 (2D) or 6 (3D) numbers each")
    if not all(float(v).is_integer() for b in b3 for v in b):
        raise KdsamError(f"{path.name}: its --boxes 3D entries are voxel indices, whole numbers (not rounded for you)")
    return Prompts(np.array(b2, np.float32).reshape(-1, 4), np.array(b3, np.float32).reshape(-1, 6))
