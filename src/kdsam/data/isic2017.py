"""`isic2017:PATH`: ISIC 2017 Part 1 (lesion segmentation) as published, one folder pair per
official split. Superpixel files and the metadata CSV lie beside the images and are not samples."""

from __future__ import annotations

import re
from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.data.folder import image_files
from kdsam.data.layout import existing, layout_error, require_records

SPLIT_FOLDERS: dict[str, tuple[str, str]] = {
    "train": ("ISIC-2017_Training_Data", "ISIC-2017_Training_Part1_GroundTruth"),
    "val": ("ISIC-2017_Validation_Data", "ISIC-2017_Validation_Part1_GroundTruth"),
    "test": ("ISIC-2017_Test_v2_Data", "ISIC-2017_Test_v2_Part1_GroundTruth"),
}
IMAGE_NAME = re.compile(r"ISIC_\d+")  # not ISIC_0000000_superpixels
EXPECTED = (
    "at least one of "
    + ", ".join(f"{data}/ (+ {truth}/)" for data, truth in SPLIT_FOLDERS.values())
    + " holding ISIC_<7 digits>.jpg"
)


def isic2017_records(root: Path) -> list[Record]:
    """Records of every split folder present (a user may have downloaded training data only);
    meta["split"] is the official split. An image whose _segmentation.png is missing has no mask."""
    present = {split: folders for split, folders in SPLIT_FOLDERS.items() if (root / folders[0]).is_dir()}
    if not present:
        raise layout_error(root, "ISIC 2017", EXPECTED)
    records = [
        Record(img.stem, img, existing(root / truth / f"{img.stem}_segmentation.png"), {"split": split})
        for split, (data, truth) in present.items()
        for img in image_files(root / data)
        if IMAGE_NAME.fullmatch(img.stem)
    ]
    return require_records(records, root, "ISIC 2017", EXPECTED)
