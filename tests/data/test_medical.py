"""Reading DICOM, NIfTI, 16-bit and hostile files: real test files shipped by pydicom and nibabel,
plus series built from them with known order, spacing and missing slices."""

from __future__ import annotations

import re
import struct
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.testing import data_path as NIBABEL_DATA
from PIL import Image
from pydicom.data import get_testdata_file

from kdsam.data.dataset import Dataset, Record
from kdsam.data.imageio import image_size, read_image, read_image_with_intensity
from kdsam.data.medical import read_volume, write_nifti
from kdsam.errors import BadFileError
from tests import hostile

CT = Path(get_testdata_file("CT_small.dcm"))
MR = Path(get_testdata_file("MR_small.dcm"))
MR_RLE = Path(get_testdata_file("MR_small_RLE.dcm"))  # RLE Lossless: a compressed transfer syntax
ANATOMICAL = Path(NIBABEL_DATA) / "anatomical.nii"
FOUR_D = Path(NIBABEL_DATA) / "example4d.nii.gz"


def test_ct_slice_is_in_hounsfield_units_with_its_geometry() -> None:
    ds = pydicom.dcmread(CT)
    vol = read_volume(CT)
    assert vol.array.shape == (128, 128, 1) and vol.modality == "CT"
    raw = ds.pixel_array.astype(np.float32)
    np.testing.assert_array_equal(vol.slices()[0], raw * float(ds.RescaleSlope) + float(ds.RescaleIntercept))
    assert vol.array.min() == -896.0  # raw 128 with intercept -1024
    assert vol.spacing == pytest.approx((0.661468, 0.661468, 5.0))
    # voxel (0, 0, 0) sits at ImagePositionPatient, turned from DICOM's LPS into NIfTI's RAS
    x, y, z = (float(v) for v in ds.ImagePositionPatient)
    np.testing.assert_allclose(vol.affine @ [0, 0, 0, 1], [-x, -y, z, 1])


def test_dicom_windows_the_file_s_own_way_by_default() -> None:
    image, record = read_image_with_intensity(MR)
    assert record["method"] == "window" and (record["level"], record["width"]) == (600.0, 1600.0)
    assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    _, ct = read_image_with_intensity(CT)
    assert ct.get("preset") == "soft-tissue"  # no window in the file: a CT gets the soft-tissue one
    lung, record = read_image_with_intensity(CT, window=(-600.0, 1500.0))
    assert record["level"] == -600.0 and not np.array_equal(lung, read_image(CT))


def test_compressed_dicom_decodes_like_the_uncompressed_one() -> None:
    np.testing.assert_array_equal(read_volume(MR_RLE).array, read_volume(MR).array)


def _series(folder: Path, offsets: list[float], source: Path = CT) -> list[Path]:
    """Copies of one slice at the given offsets along its normal, each filled with its own offset
    (so order can be checked), written in shuffled order under names that do not sort by position."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n, offset in enumerate(offsets):
        ds = pydicom.dcmread(source)
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + offset]
        pixels = np.full(ds.pixel_array.shape, int(offset) + 1100, dtype=ds.pixel_array.dtype)
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{(n * 7919) % 97:04d}"  # no suffix: found by the DICM marker
        ds.save_as(path)
        paths.append(path)
    return paths


def test_series_is_sorted_by_position_with_spacing_from_positions(tmp_path: Path) -> None:
    _series(tmp_path / "s", [10.0, 0.0, 20.0, 5.0, 15.0])
    vol = read_volume(tmp_path / "s")
    assert vol.array.shape == (128, 128, 5)
    assert [float(vol.array[0, 0, k]) for k in range(5)] == [76.0, 81.0, 86.0, 91.0, 96.0]  # +1100 - 1024 HU
    assert vol.spacing[2] == pytest.approx(5.0)
    assert vol.affine[2, 3] == pytest.approx(-75.699997)  # the lowest slice is k = 0


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda d: _series(d, [0.0, 5.0, 15.0, 20.0]), "missing slices"),
        (lambda d: (_series(d, [0.0, 5.0]), _series(d / "..", [10.0], MR)[0].rename(d / "mr")), "different sizes"),
        (lambda d: _series(d, [0.0, 5.0, 5.0]), "share a position"),
    ],
)
def test_bad_series_is_one_line_naming_the_folder(tmp_path: Path, build, message: str) -> None:
    folder = tmp_path / "series"
    build(folder)
    with pytest.raises(BadFileError, match=message) as err:
        read_volume(folder)
    assert str(folder) in str(err.value) and "\n" not in str(err.value)


def test_dicom_without_pixel_data_is_refused(tmp_path: Path) -> None:
    ds = pydicom.dcmread(CT)
    del ds.PixelData
    path = tmp_path / "report.dcm"
    ds.save_as(path)
    with pytest.raises(BadFileError, match="without pixel data"):
        read_image(path)


def test_nifti_keeps_shape_affine_and_spacing_and_mask_round_trips(tmp_path: Path) -> None:
    vol = read_volume(ANATOMICAL)
    img = nib.load(ANATOMICAL)
    assert vol.array.shape == (33, 41, 25) and vol.spacing == (2.0, 2.0, 2.0)
    np.testing.assert_array_equal(vol.array, img.get_fdata())
    labels = (vol.array > np.percentile(vol.array, 90)).astype(np.uint8)
    write_nifti(tmp_path / "mask.nii.gz", labels, vol)
    back = nib.load(tmp_path / "mask.nii.gz")
    np.testing.assert_array_equal(back.affine, img.affine)
    np.testing.assert_array_equal(np.asarray(back.dataobj), labels)
    assert back.get_data_dtype() == np.uint8 and nib.aff2axcodes(back.affine) == ("L", "A", "S")


def test_dicom_series_written_as_nifti_lands_in_the_same_place(tmp_path: Path) -> None:
    _series(tmp_path / "s", [0.0, 5.0, 10.0])
    vol = read_volume(tmp_path / "s")
    write_nifti(tmp_path / "m.nii.gz", np.ones(vol.array.shape, np.uint8), vol)
    back = read_volume(tmp_path / "m.nii.gz")
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.spacing == pytest.approx((0.661468, 0.661468, 5.0))


def test_4d_nifti_is_refused_by_name() -> None:
    with pytest.raises(BadFileError, match="4D NIfTI") as err:
        read_volume(FOUR_D)
    assert str(FOUR_D) in str(err.value)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_use_their_range(tmp_path: Path, suffix: str) -> None:
    ramp = (np.arange(40 * 50, dtype=np.uint16).reshape(40, 50) * 20 + 3000).astype(np.uint16)
    path = tmp_path / f"deep{suffix}"
    Image.fromarray(ramp).save(path)
    image, record = read_image_with_intensity(path)
    assert record["method"] == "minmax" and image[0, 0, 0] == 0 and image[-1, -1, 0] == 255
    windowed, record = read_image_with_intensity(path, window=(3000.0, 2000.0))
    assert record["method"] == "window" and windowed[-1, -1, 0] == 255 and windowed[0, 0, 0] == 128


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb's calling card), no pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    return path


def test_a_png_claiming_60000x60000_is_refused_by_name_not_a_traceback(tmp_path: Path) -> None:
    bomb = _png_header_only(tmp_path / "bomb.png", 60000, 60000)
    for read in (read_image, image_size):
        with pytest.raises(BadFileError, match=r"bomb\.png"):
            read(bomb)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(mask)
    dataset = Dataset("folder:x", [Record("bomb", bomb, (mask,))])
    assert list(dataset.samples()) == [] and dataset.problems[0]["file"] == str(bomb)


def test_folder_datasets_read_dicom_images(tmp_path: Path) -> None:
    from kdsam.data import open_dataset

    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "ct.dcm").write_bytes(CT.read_bytes())
    mask = np.zeros((128, 128), bool)
    mask[40:80, 30:90] = True
    (tmp_path / "masks").mkdir()
    Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / "masks" / "ct.png")
    (sample,) = list(open_dataset(f"folder:{tmp_path}").samples())
    assert sample.image.shape == (128, 128, 3) and sample.mask.sum() == 40 * 60
    np.testing.assert_array_equal(sample.image, read_image(CT))


def test_jpeg2000_dicom_decodes_and_an_undecodable_syntax_names_the_plugin() -> None:
    image = read_image(get_testdata_file("JPEG2000.dcm"))  # JPEG 2000 through pydicom's Pillow plugin
    assert image.shape == (1024, 256, 3) and image.max() > image.min()
    lossy = get_testdata_file("JPEG-lossy.dcm")  # 12-bit JPEG Extended: no plugin here decodes it
    with pytest.raises(BadFileError, match="install a pydicom plugin") as err:
        read_image(lossy)
    assert str(err.value).startswith(str(lossy)) and "\n" not in str(err.value)


@pytest.mark.parametrize(("name", "message"), [("cut.nii.gz", "unreadable NIfTI"), ("junk.dcm", "unreadable DICOM")])
def test_damaged_volume_files_are_one_line(tmp_path: Path, name: str, message: str) -> None:
    path = tmp_path / name
    source = ANATOMICAL.read_bytes() if name.endswith(".nii.gz") else b"not a dicom file at all" * 10
    path.write_bytes(source[:200])
    with pytest.raises(BadFileError, match=message) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize("kind", sorted(hostile.BAD_DICOMS))
def test_malformed_dicom_attributes_are_one_line_naming_them(tmp_path: Path, kind: str) -> None:
    path = hostile.bad_dicom(tmp_path, kind)
    with pytest.raises(BadFileError, match=hostile.BAD_DICOMS[kind][1]) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("build", "message"),
    [(hostile.corrupt_gzip_nifti, "unreadable NIfTI"), (hostile.huge_nifti, "header claims shape (30000, 30000")],
)
def test_corrupt_gzip_and_huge_headers_are_one_line(tmp_path: Path, build, message: str) -> None:
    path = build(tmp_path)
    with pytest.raises(BadFileError, match=re.escape(message)) as err:
        read_volume(path)
    assert str(err.value).startswith(str(path)) and "\n" not in str(err.value)
