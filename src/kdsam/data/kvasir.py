"""`kvasir:PATH`: Kvasir-SEG as published. images/<id>.jpg and masks/<id>.jpg (JPEG masks, whose
grey edges read_mask binarises at 128), plus kavsir_bboxes.json (sic) with a box per polyp.
There is no official split: the registry makes a seeded one."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.data.folder import folder_records
from kdsam.data.layout import locate, require_records
from kdsam.errors import KdsamError

EXPECTED = "Kvasir-SEG/ with images/<id>.jpg and masks/<id>.jpg (and optionally kavsir_bboxes.json)"
BOXES_FILE = "kavsir_bboxes.json"


def read_boxes(path: Path) -> dict[str, list[list[float]]]:
    """{id: [[xmin, ymin, xmax, ymax], ...]} from kavsir_bboxes.json; {} when the file is absent."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        return {
            name: [[float(b["xmin"]), float(b["ymin"]), float(b["xmax"]), float(b["ymax"])] for b in entry["bbox"]]
            for name, entry in data.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise KdsamError(
            f'{path}: not a Kvasir box file ({type(err).__name__}: {err}); expected {{id: {{"bbox": '
            '[{"xmin", "ymin", "xmax", "ymax"}, ...]}}; fix or remove it'
        ) from err


def kvasir_records(root: Path) -> list[Record]:
    """One record per image; its boxes, where kavsir_bboxes.json lists them, in meta["bboxes"]."""
    root = locate(
        root, lambda p: (p / "images").is_dir() and (p / "masks").is_dir(), "Kvasir-SEG", "Kvasir-SEG", EXPECTED
    )
    boxes = read_boxes(root / BOXES_FILE)
    records = [replace(r, meta={**r.meta, "bboxes": boxes[r.name]}) if r.name in boxes else r for r in _listed(root)]
    return require_records(records, root, "Kvasir-SEG", EXPECTED)


def _listed(root: Path) -> list[Record]:
    try:
        return folder_records(root)
    except KdsamError:  # folder_records' message speaks of the generic layout; ours names Kvasir's
        return []
