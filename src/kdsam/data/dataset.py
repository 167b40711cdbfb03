"""A dataset is a list of file records plus a way to decode one; samples are decoded lazily."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data.imageio import image_size, read_image, read_labels, read_mask
from kdsam.data.sample import Sample
from kdsam.errors import BadFileError, KdsamError


@dataclass(frozen=True)
class Record:
    """Where one sample lies on disk. `masks` are united; `meta` is copied into the Sample."""

    name: str
    image: Path
    masks: tuple[Path, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)


def require_unique_names(records: Sequence[Record]) -> list[Record]:
    """A sample is known by its name (splits, predictions, results): two files that would share one
    (case9.png and case9.jpg) are refused in one line naming both, before any split is made."""
    seen: dict[str, Path] = {}
    for r in records:
        if r.name in seen:
            raise KdsamError(
                f"{seen[r.name]} and {r.image} are both sample {r.name!r}: one would land in two splits; "
                "rename or remove one of them"
            )
        seen[r.name] = r.image
    return list(records)


def union_of_masks(record: Record) -> np.ndarray:
    """The target is the union of every mask file of an image (BUSI's _mask_1, Kvasir's parts); a
    single file that is a label map (values 1..K) keeps its labels."""
    if len(record.masks) == 1:
        labels = read_labels(record.masks[0])
        return labels if labels.max() > 1 else labels > 0
    masks = [read_mask(p) for p in record.masks]
    if len({m.shape for m in masks}) > 1:
        raise BadFileError(f"{record.masks[0]}: the masks of {record.name!r} differ in size")
    return np.logical_or.reduce(masks)


def load_record(
    record: Record, read_target: Callable[[Record], np.ndarray] = union_of_masks, max_side: int | None = None
) -> Sample:
    """Decode one record, checking that image and mask agree in size. A target read as an integer
    label map with labels above 1 becomes the sample's `labels` (its union the mask).

    max_side: decode a smaller copy (training reads images many times; evaluation needs the
    original resolution and leaves it None). The mask is then resized to match, nearest-neighbour.
    """
    if not record.masks:
        raise BadFileError(f"{record.image}: no mask found for image {record.name!r}")
    original = image_size(record.image)
    mask = read_target(record)
    if mask.shape != original:
        raise BadFileError(
            f"{record.masks[0]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image "
            f"{record.image.name} is {original[1]}x{original[0]}"
        )
    image = read_image(record.image, max_side=max_side)
    if image.shape[:2] != mask.shape:
        mask = resize_nearest(mask, image.shape[:2])
    labels = mask if mask.dtype != bool and mask.max() > 1 else None
    meta = {**record.meta, "image_path": str(record.image), "mask_paths": [str(p) for p in record.masks]}
    return Sample(record.name, image, mask > 0, meta, labels)


def resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize (pixel centres, as Pillow's) of a mask or label map of any dtype to
    (height, width)."""
    rows = (2 * np.arange(shape[0]) + 1) * array.shape[0] // (2 * shape[0])
    cols = (2 * np.arange(shape[1]) + 1) * array.shape[1] // (2 * shape[1])
    return array[rows[:, None], cols[None, :]]


class Dataset(Sequence[Sample]):
    """Samples of one dataset (or one split of it), decoded on access, never all held in memory."""

    def __init__(
        self,
        location: str,
        records: Sequence[Record],
        read_target: Callable[[Record], np.ndarray] = union_of_masks,
        split: str | None = None,
        max_side: int | None = None,
        load: Callable[[Record, int | None], Sample] | None = None,
    ) -> None:
        """load: decodes a record at most max_side large; default `load_record` with `read_target`
        (a volume dataset's records are slices read from its slice store instead)."""
        self.location = location
        self.records = list(records)
        self.read_target = read_target
        self.split = split
        self.max_side = max_side
        self.load = load
        self.problems: list[dict[str, str]] = []

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Sample:  # type: ignore[override]
        return self.decode(self.records[index])

    def decode(self, record: Record) -> Sample:
        if self.load is not None:
            return self.load(record, self.max_side)
        return load_record(record, self.read_target, self.max_side)

    @property
    def names(self) -> list[str]:
        return [r.name for r in self.records]

    def subset(self, names: Sequence[str], split: str | None = None) -> Dataset:
        keep = set(names)
        records = [r for r in self.records if r.name in keep]
        return Dataset(self.location, records, self.read_target, split, self.max_side, self.load)

    def samples(self) -> Iterator[Sample]:
        """Every readable sample; a bad file is recorded in `problems` and skipped."""
        for record in self.records:
            try:
                yield self.decode(record)
            except BadFileError as err:
                self.problems.append({"name": record.name, "file": _first_path(str(err)), "error": str(err)})


def _first_path(message: str) -> str:
    return message.split(": ", 1)[0]
