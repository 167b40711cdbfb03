"""`folder:PATH`: images/ and masks/ matched by file stem; the layout for any other data."""

from __future__ import annotations

from pathlib import Path

from kdsam.data.dataset import Record
from kdsam.errors import KdsamError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".gif", ".webp", ".dcm"}


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def folder_records(root: Path) -> list[Record]:
    """One record per file in images/; its mask is the file in masks/ with the same stem (or
    stem + `_mask`). An image without a mask keeps an empty mask list and is reported on load."""
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise KdsamError(f"{root}: expected a folder with images/ and masks/ (files matched by stem)")
    by_stem: dict[str, Path] = {}
    for m in image_files(masks):
        if m.stem in by_stem:
            raise KdsamError(f"{by_stem[m.stem]} and {m} are both the mask of {m.stem!r}: remove one of them")
        by_stem[m.stem] = m
    records = []
    for img in image_files(images):
        mask = by_stem.get(img.stem) or by_stem.get(f"{img.stem}_mask")
        records.append(Record(img.stem, img, (mask,) if mask else ()))
    if not records:
        raise KdsamError(f"{images}: no images found (looked for {', '.join(sorted(IMAGE_SUFFIXES))})")
    return records
