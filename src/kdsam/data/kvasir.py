"""`kvasir:PATH`: Kvasir-SEG as published. images/<id>.jpg and masks/<id>.jpg (JPEG masks, whose
grey edges read_mask binarises at 128). The archive's kavsir_bboxes.json (sic) is not read: box
prompts come from the masks, one definition for training and evaluation (kdsam.data.prompts).
There is no official split: the registry makes a seeded one."""

from __future__ import annotations

from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.data.folder import folder_records
from kdsam.data.layout import locate, require_records
from kdsam.errors import KdsamError

EXPECTED = "Kvasir-SEG/ with images/<id>.jpg and masks/<id>.jpg"


def kvasir_records(root: Path) -> list[Record]:
    """One record per image, its mask matched by id."""
    root = locate(
        root, lambda p: (p / "images").is_dir() and (p / "masks").is_dir(), "Kvasir-SEG", "Kvasir-SEG", EXPECTED
    )
    return require_records(_listed(root), root, "Kvasir-SEG", EXPECTED)


def _listed(root: Path) -> list[Record]:
    try:
        return folder_records(root)
    except KdsamError:  # folder_records' message speaks of the generic layout; ours names Kvasir's
        return []
