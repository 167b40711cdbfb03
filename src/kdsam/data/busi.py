"""`busi:PATH`: BUSI (breast ultrasound) as published: Dataset_BUSI_with_GT/{benign,malignant,normal}/
"benign (1).png" with "benign (1)_mask.png" and, for extra lesions, "benign (1)_mask_1.png" ...
The target is the union of an image's masks; normal images have empty masks and are kept."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.data.folder import image_files
from kdsam.data.layout import locate, require_records

CLASSES = ("benign", "malignant", "normal")
MASK_NAME = re.compile(r"(?P<image>.+)_mask(?:_\d+)?")
EXPECTED = 'Dataset_BUSI_with_GT/ with benign/, malignant/ and normal/ holding "<class> (<i>).png" and its _mask files'


def busi_records(root: Path) -> list[Record]:
    """One record per image of every class folder present, meta["class"] its folder."""
    root = locate(root, lambda p: any((p / c).is_dir() for c in CLASSES), "Dataset_BUSI_with_GT", "BUSI", EXPECTED)
    records = []
    for label in CLASSES:
        if (root / label).is_dir():
            records += _class_records(root / label, label)
    return require_records(records, root, "BUSI", EXPECTED)


def _class_records(folder: Path, label: str) -> list[Record]:
    masks: dict[str, list[Path]] = defaultdict(list)
    images = []
    for path in image_files(folder):
        match = MASK_NAME.fullmatch(path.stem)
        if match:
            masks[match["image"]].append(path)
        else:
            images.append(path)
    return [Record(img.stem, img, tuple(sorted(masks[img.stem])), {"class": label}) for img in images]
