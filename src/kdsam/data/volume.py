"""The one in-memory form of every 3D image kdsam reads (`Volume`), and the checks shared by its
readers (kdsam.data.medical for DICOM and NIfTI, kdsam.data.itk_io for MetaImage and NRRD), kept
apart from them so that neither reader imports the other."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kdsam.errors import BadFileError

if TYPE_CHECKING:
    from pydicom import Dataset

# Voxels a volume may hold: 4 GiB as float32 (a 512x512x4096 CT). A header claiming more is refused
# before any data is read, so a damaged or hostile file cannot exhaust memory.
MAX_VOXELS = 1 << 30


@dataclass
class Volume:
    """A 3D image: voxel data in the file's units, its affine, and what the file says about display.

    array: float32, shape (I, J, K) as stored. affine: voxel index -> RAS+ mm. modality: DICOM's
    Modality ("CT", "MR", ...) or None. window: the file's own (level, width), DICOM only.
    header: the NIfTI header to copy into outputs, None otherwise. sources: a DICOM series' datasets
    in slice (k) order, so a DICOM SEG can reference each one (kdsam.infer.dicomseg); None otherwise.
    """

    path: Path
    array: np.ndarray
    affine: np.ndarray
    modality: str | None = None
    window: tuple[float, float] | None = None
    header: object | None = None
    sources: list[Dataset] | None = None

    @property
    def spacing(self) -> tuple[float, float, float]:
        """mm between voxel centres along i, j, k (the affine's column lengths)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def slices(self, array: np.ndarray | None = None) -> np.ndarray:
        """(K, J, I): one HxW image per slice, rows along j, columns along i."""
        return np.ascontiguousarray((self.array if array is None else array).transpose(2, 1, 0))


def check_size(path: Path, shape: tuple[int, ...]) -> None:
    """Every dimension counts (a header claiming 2x2x10^9 is as bad as 10^5x10^5): refuse empty and
    over-large volumes before reading their data."""
    voxels = int(np.prod([int(n) for n in shape], dtype=object))
    if voxels == 0:
        raise BadFileError(f"{path}: an empty volume (shape {tuple(shape)})")
    if voxels > MAX_VOXELS:
        raise BadFileError(
            f"{path}: its header claims shape {tuple(shape)} ({voxels:,} voxels), more than kdsam reads "
            f"({MAX_VOXELS:,}); a damaged header, or crop the volume first"
        )


def mask_array(labels: np.ndarray, reference: Volume) -> np.ndarray:
    """Labels as uint8, checked to lie on the reference's grid (another shape is a caller's bug)."""
    if labels.shape != reference.array.shape:
        raise ValueError(f"labels of shape {labels.shape} do not match the volume's {reference.array.shape}")
    return labels.astype(np.uint8)
