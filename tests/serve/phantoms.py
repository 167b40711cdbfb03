"""Small CT-like volumes for the volume endpoints and the page: an ellipsoid of soft tissue (40 HU) in
air (-1000 HU), holding a brighter ball (200 HU), written as NIfTI (a non-trivial affine), as a DICOM
series (copies of pydicom's CT_small.dcm moved along z) and as a 3D npz."""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file

AFFINE = np.array([[-0.8, 0, 0, 90.0], [0, 0.8, 0, -100.0], [0, 0, 2.5, -40.0], [0, 0, 0, 1]])


def phantom_hu(size: int = 96, depth: int = 12) -> np.ndarray:
    """(D, H, W) float32 Hounsfield units: body ellipsoid with a ball inside, off centre."""
    z, y, x = np.mgrid[:depth, :size, :size].astype(np.float32)
    zc, c = (depth - 1) / 2, (size - 1) / 2
    body = ((x - c) / (0.42 * size)) ** 2 + ((y - c) / (0.34 * size)) ** 2 + ((z - zc) / (0.7 * depth)) ** 2 < 1
    ball = ((x - 0.6 * size) ** 2 + (y - 0.45 * size) ** 2) / (0.14 * size) ** 2 + ((z - zc) / (0.4 * depth)) ** 2 < 1
    return np.where(ball, 200.0, np.where(body, 40.0, -1000.0)).astype(np.float32)


def write_nifti_phantom(path: Path, hu: np.ndarray) -> Path:
    """(D, H, W) -> NIfTI array (I, J, K) = (W, H, D), as kdsam reads slices back."""
    nib.save(nib.Nifti1Image(np.ascontiguousarray(hu.transpose(2, 1, 0)), AFFINE), str(path))
    return path


def write_dicom_phantom(folder: Path, hu: np.ndarray) -> list[Path]:
    """One file per slice, named in an order that is not the position order (the reader sorts)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    paths = []
    for k, plane in enumerate(hu):
        ds = copy.deepcopy(source)
        x, y, z = (float(v) for v in source.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 2.5 * k]
        ds.Rows, ds.Columns = plane.shape
        ds.InstanceNumber = k + 1
        ds.PixelData = (plane + 1024).astype(np.int16).tobytes()  # RescaleIntercept -1024
        path = folder / f"slice{(k * 7) % len(hu):03d}_{k}.dcm"
        ds.save_as(path)
        paths.append(path)
    return paths


def write_npz_phantom(path: Path, hu: np.ndarray) -> Path:
    """The challenge's layout: imgs (D, H, W) uint8 in 0..255 (a soft-tissue window), spacing."""
    imgs = np.clip((hu + 160) / 400 * 255, 0, 255).astype(np.uint8)
    np.savez_compressed(path, imgs=imgs, spacing=np.array([2.5, 0.8, 0.8]))
    return path
