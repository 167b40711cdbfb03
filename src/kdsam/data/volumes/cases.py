"""One case of a volume dataset (a patient's CT or MR, a challenge npz, an unlabelled image) read into
the slices 2D models see.

A case becomes a stack of 8-bit slices along its slice axis (the third array axis of NIfTI and
DICOM, as `kdsam predict --box3d` slices them; the first axis of an npz) and, when labelled, the
label map on the same grid. Intensities go through `slice_stack`, the one mapping `kdsam predict`
uses too, so a model trains and predicts on the same pixels.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from kdsam.data import intensity
from kdsam.data.imageio import read_image_with_intensity
from kdsam.data.itk_io import data_files
from kdsam.data.medical import Volume, is_nifti, read_volume, volume_shape
from kdsam.errors import BadFileError, KdsamError, one_line

AFFINE_TOLERANCE_MM = 1e-3  # label and image grids must agree to this (as `evaluate --gts` requires)


@dataclass(frozen=True)
class Case:
    """Where one case lies. image: a volume file (NIfTI, MHA, NRRD), an npz, a DICOM series folder or a
    2D image file. label: its label volume file, None when the label lives in the npz or there is none.
    labelled: False for `images:` trees (stage 1 only)."""

    name: str
    image: Path
    label: Path | None = None
    modality: str | None = None
    labelled: bool = True
    files: tuple[Path, ...] = ()  # every file whose bytes identify the case (a DICOM series: all slices)

    def sources(self) -> tuple[Path, ...]:
        """The files whose bytes make the case: an .mhd or .nhdr header's data file among them."""
        if self.files:
            return self.files
        paths = (self.image,) if self.label is None else (self.image, self.label)
        return tuple(p for path in paths for p in (path, *data_files(path)) if p == path or p.is_file())


@dataclass
class CaseArrays:
    """A case read and mapped to 8 bits. slices: (D, H, W) or (D, H, W, 3) uint8; labels: (D, H, W)
    integer or None; spacing: mm along (D, H, W) where known; notes: what was done to the data
    that a user should hear about (one line each)."""

    slices: np.ndarray
    labels: np.ndarray | None
    spacing: tuple[float, float, float] | None
    intensity: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def slice_stack(volume: Volume, window: Any, modality: str | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """(K, J, I) uint8 slices of a volume and the record of its intensity mapping: `predict` and
    training both call this. `modality` (a dataset.json's) stands in where the file names none."""
    return intensity.to_uint8(volume.slices(), window, volume.modality or modality, volume.window)


def as_trained(window: Any, card: dict[str, Any] | None) -> tuple[Any, str | None]:
    """(window, modality) for a volume given to a model trained on volume slices: under `auto`, the
    mapping its training used (its card's `intensity`), since a NIfTI names no modality of its own."""
    trained = (card or {}).get("intensity") or {}
    if window == "auto" and trained.get("window", "auto") != "auto":
        window = intensity.parse_window(trained["window"])
    return window, trained.get("modality")


def finite(array: np.ndarray, where: str, notes: list[str]) -> np.ndarray:
    """NaN and infinite voxels set to the smallest finite value (air in CT, background in MR), counted
    in a note: one NaN must not turn a whole window or percentile into NaN."""
    bad = ~np.isfinite(array)
    n = int(bad.sum())
    if not n:
        return array
    values = array[~bad]
    fill = float(values.min()) if values.size else 0.0
    notes.append(f"{where}: {n} voxel(s) not finite (NaN/inf), set to the lowest value {fill:g}")
    out = array.copy()
    out[bad] = fill
    return out


def read_nifti_channel(path: Path, channel: int) -> Volume:
    """A NIfTI volume; a 4D one (MSD's multi-modal images) gives channel `channel` of its last axis."""
    import nibabel as nib

    try:
        img = nib.load(str(path))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as err:
        raise BadFileError(f"{path}: unreadable NIfTI ({one_line(err)})") from err
    if len(img.shape) != 4 or img.shape[3] == 1:
        return read_volume(path)
    if not 0 <= channel < img.shape[3]:
        raise BadFileError(f"{path}: has {img.shape[3]} channels; --channel {channel} is out of range")
    try:
        data = np.asarray(img.dataobj[..., channel], dtype=np.float32)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise BadFileError(f"{path}: unreadable NIfTI data ({one_line(err)})") from err
    return Volume(path, data, np.asarray(img.affine, dtype=np.float64), header=img.header)


def _label_volume(case: Case, image: Volume) -> np.ndarray:
    """The label map (I, J, K) on the image's grid, as integers; refused (the case skipped) when
    its shape or affine differ from the image's, or when it is 4D."""
    assert case.label is not None
    try:
        shape = volume_shape(case.label)
    except Exception as err:  # any reader failure: the case is named and skipped
        raise BadFileError(f"{case.label}: unreadable label volume ({one_line(err)})") from err
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        raise BadFileError(f"{case.label}: a 4D label volume {tuple(shape)}; labels must be one 3D label map")
    label = read_volume(case.label)
    if label.array.shape != image.array.shape:
        raise BadFileError(f"{case.label}: label shape {label.array.shape} differs from its image {image.array.shape}")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE_MM):
        raise BadFileError(f"{case.label}: label affine differs from its image's (another grid); resample it")
    values = np.nan_to_num(label.array, nan=0.0)
    return np.rint(values).astype(np.int32)


def read_volume_case(case: Case, window: Any, channel: int = 0) -> CaseArrays:
    """A volume file or DICOM case (nnU-Net, MSD, images:) read whole, once, for the slice store."""
    volume = read_nifti_channel(case.image, channel) if is_nifti(case.image) else read_volume(case.image)
    notes: list[str] = []
    volume.array = finite(volume.array, str(case.image), notes)
    labels = None
    if case.label is not None:
        labels = volume.slices(_label_volume(case, volume))
    slices, record = slice_stack(volume, window, case.modality)
    sx, sy, sz = volume.spacing
    return CaseArrays(slices, labels, (sz, sy, sx), record, notes)


def read_image_case(case: Case, window: Any) -> CaseArrays:
    """A 2D image file of an `images:` tree: one RGB slice."""
    image, record = read_image_with_intensity(case.image, window=window)
    return CaseArrays(image[None], None, None, record)


NPZ_KEYS = ("imgs", "gts", "spacing")


def read_npz_case(case: Case, labelled: bool = True) -> CaseArrays:
    """A MedSAM / CVPR24 / CVPR25 training npz: `imgs` HxW, HxWx3 or DxHxW (already 0..255), `gts`
    a label map of its shape, `spacing` where present. 3D is told by shape, not by file name.
    Object arrays are never unpickled: such a file is refused."""
    path = case.image
    try:
        with np.load(path, allow_pickle=False) as f:
            if "imgs" not in f.files:
                raise KdsamError(f"{path}: no 'imgs' array (has {', '.join(f.files) or 'nothing'}); not a training npz")
            arrays = {k: f[k] for k in NPZ_KEYS if k in f.files}
    except ValueError as err:
        if "allow_pickle" in str(err) or "Object arrays" in str(err):
            raise KdsamError(
                f"{path}: holds object arrays; kdsam never unpickles training data (save plain arrays)"
            ) from err
        raise BadFileError(f"{path}: unreadable npz ({err})") from err
    except (OSError, EOFError, zipfile.BadZipFile) as err:
        raise BadFileError(f"{path}: unreadable or truncated npz ({err})") from err
    imgs = np.asarray(arrays["imgs"])
    is_3d = imgs.ndim == 3 and imgs.shape[-1] not in (3, 4)
    if imgs.ndim not in (2, 3) or imgs.size == 0:
        raise BadFileError(f"{path}: 'imgs' of shape {imgs.shape}; expected HxW, HxWx3 or DxHxW")
    notes: list[str] = []
    if imgs.dtype != np.uint8:
        imgs = np.clip(np.rint(finite(imgs.astype(np.float32), str(path), notes)), 0, 255).astype(np.uint8)
    slices = imgs if is_3d else imgs[None]
    if slices.ndim == 4:
        slices = slices[..., :3]
    labels = None
    if labelled and "gts" in arrays:
        gts = np.asarray(arrays["gts"])
        if gts.shape != imgs.shape[: gts.ndim] or gts.ndim != (3 if is_3d else 2):
            raise BadFileError(f"{path}: 'gts' of shape {gts.shape} does not match 'imgs' {imgs.shape}")
        labels = np.rint(np.nan_to_num(gts.astype(np.float32))).astype(np.int32) if gts.dtype.kind == "f" else gts
        labels = labels if is_3d else labels[None]
    spacing = _npz_spacing(arrays.get("spacing"), is_3d)
    return CaseArrays(np.ascontiguousarray(slices), labels, spacing, {"method": "none", "source": "npz, 0..255"}, notes)


def _npz_spacing(value: np.ndarray | None, is_3d: bool) -> tuple[float, float, float] | None:
    """The npz's spacing in its array order (as the challenge's evaluation reads it); a 2D case's
    (row, column) spacing gains a unit slice gap."""
    if value is None:
        return None
    s = np.asarray(value, dtype=np.float64).ravel()
    if not np.all(np.isfinite(s)) or np.any(s <= 0) or len(s) not in (2, 3):
        return None
    if len(s) == 2:
        return (1.0, float(s[0]), float(s[1]))
    return (float(s[0]), float(s[1]), float(s[2])) if is_3d else (1.0, float(s[0]), float(s[1]))
