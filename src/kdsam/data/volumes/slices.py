"""Volume datasets as 2D samples: every case stored once (kdsam.data.volumes.store), each of its
slices one record, so training, the embedding cache and `data inspect` use the same machinery as for
2D photos. Splits act on cases; a slice belongs to the split of its case."""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from kdsam.data.dataset import Record, resize_nearest
from kdsam.data.sample import Sample
from kdsam.data.volumes.cases import Case, CaseArrays, read_image_case, read_npz_case, read_volume_case
from kdsam.data.volumes.layouts import IMAGE_SUFFIXES, CaseList, check_labels
from kdsam.data.volumes.store import SliceStore, StoredCase
from kdsam.errors import BadFileError
from kdsam.utils.cache_dir import default_cache_dir
from kdsam.utils.ranks import torchrun_place

log = logging.getLogger("kdsam")


@dataclass(frozen=True)
class VolumeOptions:
    """How volumes become slices: which channel of a multi-modal case, which intensity mapping
    (`--window`; `auto` lets the dataset's modality decide), and where the slice store lives
    (None: the cache folder, $KDSAM_CACHE or ~/.cache/kdsam)."""

    channel: int = 0
    window: str = "auto"
    cache_dir: Path | None = None


@dataclass
class VolumeSet:
    """The stored cases of a volume dataset, with the cases that could not be used (one line each)."""

    cases: list[StoredCase]
    label_names: dict[int, str]
    modality: str | None
    problems: list[dict[str, str]] = field(default_factory=list)

    def records(self) -> list[Record]:
        """One record per slice: `case:zNNNN`, meta case, z, foreground (False when unlabelled)."""
        out = []
        for case in self.cases:
            fg = case.meta["foreground"] or [False] * case.depth
            extra = {} if case.labelled else {"unlabeled": True}
            out += [
                Record(f"{case.name}:z{z:04d}", case.dir, (), {"case": case.name, "z": z, "foreground": fg[z], **extra})
                for z in range(case.depth)
            ]
        return out


def read_case(case: Case, options: VolumeOptions, label_names: dict[int, str]) -> CaseArrays:
    """Read one case whole, in the way its files ask for."""
    from kdsam.data import intensity

    if case.image.suffix == ".npz":
        arrays = read_npz_case(case, case.labelled)
    elif case.image.suffix.lower() in IMAGE_SUFFIXES:
        arrays = read_image_case(case, intensity.parse_window(options.window))
    else:
        arrays = read_volume_case(case, intensity.parse_window(options.window), options.channel)
    arrays.notes += check_labels(arrays.labels, label_names, case.name)
    return arrays


def store_cases(listing: CaseList, options: VolumeOptions, progress: bool = True) -> VolumeSet:
    """Every case of a listing in the slice store, converting those not stored yet. A case that
    cannot be read is named in one line and left out; the rest goes on."""
    store = SliceStore(options.cache_dir or default_cache_dir(), options.window, options.channel)
    stored, problems = [], list(listing.problems)
    todo = []
    for case in listing.cases:
        try:
            found = store.open(case)
        except OSError as err:
            problems.append(_problem(case, f"{case.image}: unreadable ({err.strerror or err})"))
            continue
        if found is None:
            todo.append(case)
        else:
            stored.append(found)
    for case in tqdm(_rank_order(todo), desc="slice store", unit="case", disable=not progress or not todo):
        try:
            with store.claim(case):
                found = store.open(case) or store.write(case, read_case(case, options, listing.label_names))
        except BadFileError as err:
            problems.append(_problem(case, str(err)))
            continue
        stored.append(found)
    for case in stored:
        for note in case.meta.get("notes", []):
            log.warning("%s", note)
    for p in problems:
        log.warning("skipped case %s: %s", p["name"], p["error"])
    order = {c.name: i for i, c in enumerate(listing.cases)}
    stored.sort(key=lambda c: order.get(c.name, 0))
    return VolumeSet(stored, listing.label_names, listing.modality, problems)


def _rank_order(todo: list[Case]) -> list[Case]:
    """The cases to convert, each rank of a torchrun starting at its own share: ranks then convert
    different cases at once (the store's lock makes a rank that reaches a case being converted wait
    for it, not redo it)."""
    place = torchrun_place()
    start = len(todo) * place.rank // place.world_size
    return todo[start:] + todo[:start]


def _problem(case: Case, error: str) -> dict[str, str]:
    return {"name": case.name, "file": error.split(": ", 1)[0], "error": error}


class SliceReader:
    """Decodes slice records from the store into Samples. Keeps a few cases' arrays mapped, so a
    loader worker drawing slices at random opens each case's files once, not once per slice."""

    def __init__(self, keep: int = 16) -> None:
        self.keep = keep
        self._open: OrderedDict[Path, tuple[np.ndarray, np.ndarray | None]] = OrderedDict()

    def __getstate__(self) -> dict[str, Any]:  # loader workers start with nothing mapped
        return {**self.__dict__, "_open": OrderedDict()}

    def arrays(self, folder: Path) -> tuple[np.ndarray, np.ndarray | None]:
        if folder in self._open:
            self._open.move_to_end(folder)
            return self._open[folder]
        try:
            slices = np.load(folder / "slices.npy", mmap_mode="r")
            labels_path = folder / "labels.npy"
            labels = np.load(labels_path, mmap_mode="r") if labels_path.is_file() else None
        except (OSError, ValueError) as err:
            raise BadFileError(f"{folder}: slice store entry missing or damaged; rerun to rebuild it ({err})") from err
        self._open[folder] = (slices, labels)
        if len(self._open) > self.keep:
            self._open.popitem(last=False)
        return slices, labels

    def __call__(self, record: Record, max_side: int | None = None) -> Sample:
        slices, labels = self.arrays(record.image)
        z = int(record.meta["z"])
        image = np.asarray(slices[z])
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
        label = np.asarray(labels[z]) if labels is not None else np.zeros(image.shape[:2], np.uint8)
        if max_side and max(image.shape[:2]) > max_side:
            scale = max_side / max(image.shape[:2])
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            label = resize_nearest(label, image.shape[:2])
        meta = {**record.meta, "store": str(record.image)}
        multi = label.max(initial=0) > 1
        return Sample(
            record.name, np.ascontiguousarray(image), label > 0, meta, label.astype(np.int32) if multi else None
        )
