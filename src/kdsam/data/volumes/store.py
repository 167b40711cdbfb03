"""The slice store: each case converted once into windowed uint8 slices, memory-mapped thereafter.

A compressed NIfTI cannot give one slice without inflating the whole file, and training draws
slices at random thousands of times. So each case is read once into `<cache>/slices/<key>/`:
`slices.npy` (D, H, W[, 3]) uint8, `labels.npy` (D, H, W) when labelled, and `case.json` (depth,
spacing, which slices hold foreground, the intensity mapping, notes). The key hashes the files'
bytes, the intensity mapping, the channel and the store's format, so a changed file or `--window`
never reuses a stale entry. A case is written to a temporary folder and renamed into place: ranks,
runs and machines sharing the folder never see half a case, and an interrupted fill resumes.
While a process converts a case it holds a lock on it (`claim`), so ranks starting together
convert each case once between them instead of once each; a killed process's lock is released by
the operating system.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data.volumes.cases import Case, CaseArrays
from kdsam.errors import KdsamError

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; ranks may then convert a case twice, still atomically
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime_ns) -> sha256 of its bytes


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes, computed once per process for an unchanged file."""
    stat = path.stat()
    memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if memo not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[memo] = h.hexdigest()
    return _DIGESTS[memo]


@dataclass
class StoredCase:
    """One case in the store; arrays are opened memory-mapped, so reading a slice reads that slice."""

    name: str
    dir: Path
    meta: dict[str, Any]

    @property
    def depth(self) -> int:
        return int(self.meta["depth"])

    @property
    def labelled(self) -> bool:
        return bool(self.meta["labelled"])

    def slices(self) -> np.ndarray:
        return np.load(self.dir / "slices.npy", mmap_mode="r")

    def labels(self) -> np.ndarray | None:
        return np.load(self.dir / "labels.npy", mmap_mode="r") if self.labelled else None


class SliceStore:
    """Cases of one dataset under one intensity mapping and channel."""

    def __init__(self, root: Path, mapping: Any, channel: int = 0) -> None:
        self.root = Path(root) / "slices"
        self.locks = Path(root) / "locks" / "slices"
        self.mapping = mapping
        self.channel = channel

    def key(self, case: Case) -> str:
        h = hashlib.sha256(json.dumps([FORMAT, repr(self.mapping), self.channel, case.labelled]).encode())
        for path in case.sources():
            h.update(file_digest(path).encode())
        return h.hexdigest()[:24]

    def open(self, case: Case) -> StoredCase | None:
        """The stored case, or None when missing or torn (then rebuilt)."""
        folder = self.root / self.key(case)
        try:
            meta = json.loads((folder / "case.json").read_text())
            slices = np.load(folder / "slices.npy", mmap_mode="r")
            if slices.shape[0] != meta["depth"] or (meta["labelled"] and not (folder / "labels.npy").is_file()):
                return None
        except (OSError, ValueError, KeyError):
            return None
        return StoredCase(case.name, folder, meta)

    @contextmanager
    def claim(self, case: Case) -> Iterator[None]:
        """Hold the case's lock while converting it: another process converting the same case waits,
        then finds it stored. Where the store is read-only there is nothing to convert, so no lock."""
        try:
            self.locks.mkdir(parents=True, exist_ok=True)
            handle = (self.locks / f"{self.key(case)}.lock").open("a")
        except OSError:
            yield
            return
        with handle:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_EX)
            yield

    def write(self, case: Case, arrays: CaseArrays) -> StoredCase:
        """Store a case read by `kdsam.data.volumes.cases`; atomic (a folder renamed into place)."""
        folder = self.root / self.key(case)
        labels = arrays.labels
        foreground = [bool(s.any()) for s in labels] if labels is not None else []
        meta = {
            "format": FORMAT,
            "case": case.name,
            "source": [str(p) for p in case.sources()][:4],
            "depth": int(arrays.slices.shape[0]),
            "shape": list(arrays.slices.shape),
            "spacing": list(arrays.spacing) if arrays.spacing else None,
            "labelled": labels is not None,
            "foreground": foreground,
            "label_values": sorted({int(v) for v in np.unique(labels) if v}) if labels is not None else [],
            "intensity": arrays.intensity,
            "notes": arrays.notes,
        }
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=self.root))
        except OSError as err:
            raise KdsamError(
                f"{self.root}: slice store not writable ({err.strerror}); pass a writable --cache-dir"
            ) from err
        try:
            np.save(tmp / "slices.npy", np.ascontiguousarray(arrays.slices, dtype=np.uint8))
            if labels is not None:
                dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
                np.save(tmp / "labels.npy", np.ascontiguousarray(labels, dtype=dtype))
            (tmp / "case.json").write_text(json.dumps(meta, default=_plain) + "\n")
            try:
                os.rename(tmp, folder)
            except OSError:  # another rank or run stored the same case first (theirs is as good), or torn
                if self.open(case) is None:
                    shutil.rmtree(folder.rename(Path(f"{tmp}.torn")), ignore_errors=True)
                    os.rename(tmp, folder)
        except OSError as err:
            if err.errno == 28:
                raise KdsamError(f"{self.root}: disk full while storing {case.name}; free space and rerun") from err
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return StoredCase(case.name, folder, meta)


def _plain(value: Any) -> Any:
    """numpy scalars in intensity records -> JSON numbers."""
    return value.item() if hasattr(value, "item") else str(value)
