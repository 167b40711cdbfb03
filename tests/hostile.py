"""Damaged and hostile input files, written the way the issue-22 probes found them: each builder
writes one file (or folder) under `folder` and returns its path. Shared by the loader tests and the
CLI probe table (tests/commands/test_probes.py)."""

from __future__ import annotations

import errno
import gzip
import io
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataelem import DataElement

CT = Path(get_testdata_file("CT_small.dcm"))


def _dicom(folder: Path, name: str, change: Callable[[pydicom.Dataset], None]) -> Path:
    ds = pydicom.dcmread(CT)
    change(ds)
    path = folder / name
    ds.save_as(path)
    return path


def _raw(keyword: str, value: str) -> Callable[[pydicom.Dataset], None]:
    """Store `value` as free text (VR LO) where DICOM wants numbers: what broken exporters write."""

    def change(ds: pydicom.Dataset) -> None:
        tag = pydicom.datadict.tag_for_keyword(keyword)
        ds[tag] = DataElement(tag, "LO", value)

    return change


def _set(**values: object) -> Callable[[pydicom.Dataset], None]:
    def change(ds: pydicom.Dataset) -> None:
        for keyword, value in values.items():
            setattr(ds, keyword, value)

    return change


# name -> (how the CT slice is damaged, words the one-line error must hold)
BAD_DICOMS: dict[str, tuple[Callable[[pydicom.Dataset], None], str]] = {
    "no-rows": (lambda ds: delattr(ds, "Rows"), "Rows"),
    "orientation-text": (_raw("ImageOrientationPatient", "a\\b\\c\\d\\e\\f"), "ImageOrientationPatient"),
    "orientation-short": (_set(ImageOrientationPatient=[1, 0, 0]), "ImageOrientationPatient"),
    "orientation-zero": (_set(ImageOrientationPatient=[0, 0, 0, 0, 0, 0]), "ImageOrientationPatient"),
    "spacing-text": (_raw("PixelSpacing", "abc\\1"), "PixelSpacing"),
    "spacing-one": (_set(PixelSpacing=[0.5]), "PixelSpacing"),
    "spacing-zero": (_set(PixelSpacing=[0, 0.5]), "PixelSpacing"),
    "window-text": (lambda ds: (_raw("WindowCenter", "abc")(ds), _set(WindowWidth=400)(ds)), "WindowCenter"),
    "window-nan": (_set(WindowCenter="nan", WindowWidth=400), "WindowCenter"),
    "slope-text": (_raw("RescaleSlope", "abc"), "RescaleSlope"),
    "slope-inf": (_set(RescaleSlope="inf"), "RescaleSlope"),
}


def bad_dicom(folder: Path, kind: str) -> Path:
    return _dicom(folder, f"{kind}.dcm", BAD_DICOMS[kind][0])


def nifti(folder: Path, name: str = "ct.nii.gz", shape: tuple[int, int, int] = (24, 20, 6)) -> Path:
    """A small valid int16 volume with a bright block in it."""
    data = np.zeros(shape, np.int16)
    data[6:16, 5:14, 1:5] = 300
    path = folder / name
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.9, 2.5, 1.0])), path)
    return path


def corrupt_gzip_nifti(folder: Path, name: str = "corrupt.nii.gz") -> Path:
    """A gzip whose deflate stream is damaged part way: zlib raises zlib.error, not an OSError."""
    rng = np.random.default_rng(0)
    volume = nib.Nifti1Image(rng.integers(0, 1000, (20, 20, 10)).astype(np.int16), np.eye(4))
    packed = bytearray(gzip.compress(volume.to_bytes()))
    packed[60:120] = bytes(range(60))
    path = folder / name
    path.write_bytes(bytes(packed))
    return path


def huge_nifti(folder: Path, name: str = "huge.nii") -> Path:
    """A 100-byte NIfTI whose header claims 30000^3 voxels (reading it would need 100 TB)."""
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).header
    header.set_data_shape((30000, 30000, 30000))
    path = folder / name
    path.write_bytes(header.binaryblock + bytes(104))
    return path


def npz_case(folder: Path, name: str = "2DBox_case.npz", **arrays: object) -> Path:
    """A CVPR24 2D case: a 32x40 RGB image with one valid box, any array replaced by `arrays`."""
    content = {"imgs": np.full((32, 40, 3), 90, np.uint8), "boxes": np.array([[4, 4, 20, 20]]), **arrays}
    path = folder / name
    np.savez(path, **content)
    return path


def npy_named_npz(folder: Path) -> Path:
    path = folder / "2DBox_npy.npz"
    with path.open("wb") as f:
        np.save(f, np.zeros((8, 8, 3), np.uint8))
    return path


def truncated_npz(folder: Path) -> Path:
    whole = npz_case(folder, "2DBox_whole.npz").read_bytes()
    path = folder / "2DBox_cut.npz"
    path.write_bytes(whole[: len(whole) // 2])
    (folder / "2DBox_whole.npz").unlink()
    return path


# name -> (builder of one bad case among good ones in a folder run, words its one line holds)
BAD_CASES: dict[str, tuple[Callable[[Path], Path], tuple[str, ...]]] = {
    "corrupt-gzip-nifti": (corrupt_gzip_nifti, ("corrupt.nii.gz", "unreadable NIfTI")),
    "huge-nifti": (huge_nifti, ("huge.nii", "header claims shape")),
    "npy-named-npz": (npy_named_npz, ("2DBox_npy.npz",)),
    "truncated-npz": (truncated_npz, ("2DBox_cut.npz",)),
    "string-imgs": (lambda f: npz_case(f, "2DBox_str.npz", imgs=np.array(["a", "b"])), ("2DBox_str.npz",)),
    "string-boxes": (
        lambda f: npz_case(f, "2DBox_strbox.npz", boxes=np.array([["a", "b", "c", "d"]])),
        ("2DBox_strbox.npz",),
    ),
    "scalar-spacing": (
        lambda f: npz_case(
            f,
            "3DBox_spacing.npz",
            imgs=np.zeros((3, 16, 16), np.uint8),
            boxes=np.array([[2, 2, 0, 10, 10, 2]]),
            spacing=np.float64(1.0),
        ),
        ("3DBox_spacing.npz",),
    ),
    "empty-image": (
        lambda f: npz_case(f, "2DBox_empty.npz", imgs=np.zeros((0, 0, 3), np.uint8)),
        ("2DBox_empty.npz", "holds no pixels"),
    ),
    "dicom-without-rows": (lambda f: bad_dicom(f, "no-rows"), ("no-rows.dcm", "Rows")),
}


class FullDisk(io.FileIO):
    """A file on a disk that fills after `room` bytes: writes past it raise ENOSPC, as the kernel does."""

    room = 0

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


def fill_disk(monkeypatch, room: int = 0) -> None:
    """From now on kdsam.utils.atomic's own file writes (save_torch) hit a full disk."""
    import kdsam.utils.atomic as atomic

    disk = type("Disk", (FullDisk,), {"room": room})
    monkeypatch.setattr(atomic, "open", lambda path, mode="rb": disk(path, mode.replace("b", "")), raising=False)


class RunsCode:
    """Unpickling this runs a shell command that leaves `marker` behind: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_with_code(folder: Path, name: str = "evil.pt") -> Path:
    """A plain pickle (protocol 4: torch warns about it) that would create folder/PWNED if loaded."""
    path = folder / name
    path.write_bytes(pickle.dumps({"state_dict": RunsCode(folder / "PWNED")}, protocol=4))
    return path
