"""MetaImage (.mha/.mhd) and NRRD (.nrrd/.nhdr) volumes: nibabel's own test NIfTI files, converted by
SimpleITK's writer (ITK's NIfTI reader is independent of nibabel), read to the same voxels and the
same RAS+ affine as kdsam reads the NIfTI; masks written back on the input's grid; and the damaged
and unsuitable files users meet, each refused in one line naming the file."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from kdsam.data.itk_io import data_files
from kdsam.data.medical import is_volume_file, read_volume, volume_shape, write_mask
from kdsam.data.volumes.cases import Case
from kdsam.errors import BadFileError

NIBABEL = Path(data_path)
OBLIQUE = NIBABEL / "example4d.nii.gz"  # 128x96x24x2, rotated about x: an oblique scan


def convert(nifti: Path, out: Path, compress: bool = False) -> Path:
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(out), useCompression=compress)
    return out


def oblique(out: Path) -> Path:
    """The first time point of nibabel's oblique 4D example, as ITK reads and writes it."""
    sitk.WriteImage(sitk.ReadImage(str(OBLIQUE))[:, :, :, 0], str(out), useCompression=True)
    return out


def refused(path: Path, *words: str) -> str:
    with pytest.raises(BadFileError) as info:
        read_volume(path)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    assert all(w in message for w in words), message
    return message


@pytest.mark.parametrize("suffix", [".mha", ".mhd", ".nrrd", ".nhdr"])
@pytest.mark.parametrize("name", ["anatomical.nii", "reoriented_anat_moved.nii"])  # x flipped; x, y as RAS
def test_itk_file_reads_as_kdsam_reads_its_nifti(tmp_path: Path, name: str, suffix: str) -> None:
    nifti = read_volume(NIBABEL / name)
    volume = read_volume(convert(NIBABEL / name, tmp_path / f"volume{suffix}"))
    assert volume.array.dtype == np.float32 and volume.array.shape == nifti.array.shape
    np.testing.assert_allclose(volume.array, nifti.array)
    np.testing.assert_allclose(volume.affine, nifti.affine, atol=1e-4)
    assert volume.header is None and volume.spacing == pytest.approx(nifti.spacing)


def test_a_detached_header_reads_its_data_file(tmp_path: Path) -> None:
    header = convert(NIBABEL / "anatomical.nii", tmp_path / "ct.mhd")
    assert data_files(header) == (tmp_path / "ct.raw",) and (tmp_path / "ct.raw").is_file()
    assert read_volume(header).array.shape == (33, 41, 25)
    assert Case("ct", header).sources() == (header, tmp_path / "ct.raw")  # the slice store's key sees the .raw


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_an_oblique_volume_keeps_its_direction(tmp_path: Path, suffix: str) -> None:
    source = nib.load(OBLIQUE)
    assert abs(source.affine[1, 2]) > 0.3  # truly oblique: slices tilted about x
    volume = read_volume(oblique(tmp_path / f"fmri{suffix}"))
    np.testing.assert_allclose(volume.array, source.get_fdata()[..., 0])
    np.testing.assert_allclose(volume.affine, source.affine, atol=1e-4)


@pytest.mark.parametrize("suffix", [".mha", ".nrrd"])
def test_a_mask_is_written_compressed_on_the_volumes_grid(tmp_path: Path, suffix: str) -> None:
    source = oblique(tmp_path / f"fmri{suffix}")
    volume = read_volume(source)
    labels = (volume.array > np.median(volume.array)).astype(np.uint8)
    out = tmp_path / "out" / f"mask{suffix}"
    write_mask(out, labels, volume)
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]  # no temporary file left
    mask, image = sitk.ReadImage(str(out)), sitk.ReadImage(str(source))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == image.GetSize()
    for attribute in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(mask, attribute)(), getattr(image, attribute)(), atol=1e-6)
    np.testing.assert_array_equal(read_volume(out).array, labels)
    assert (b"CompressedData = True" if suffix == ".mha" else b"encoding: gzip") in out.read_bytes()[:1024]


def test_a_2d_image_gains_a_slice_axis(tmp_path: Path) -> None:
    image = sitk.GetImageFromArray(np.arange(12, dtype=np.int16).reshape(3, 4))
    image.SetSpacing((0.5, 0.7))
    image.SetOrigin((10.0, 20.0))
    path = tmp_path / "slice.mha"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    assert volume.array.shape == (4, 3, 1)
    np.testing.assert_array_equal(volume.slices()[0], np.arange(12).reshape(3, 4))
    np.testing.assert_allclose(volume.affine, [[-0.5, 0, 0, -10], [0, -0.7, 0, -20], [0, 0, 1, 0], [0, 0, 0, 1]])


@pytest.mark.parametrize(("suffix", "compress"), [(".mha", False), (".mha", True), (".nrrd", True)])
def test_a_truncated_file_is_one_line_naming_it(tmp_path: Path, suffix: str, compress: bool) -> None:
    path = convert(NIBABEL / "anatomical.nii", tmp_path / f"cut{suffix}", compress)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    refused(path, "unreadable", "truncated or damaged")


def test_a_file_that_is_no_image_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "notes.mha"
    path.write_text("not a MetaImage\n")
    refused(path, "unreadable MetaImage")


@pytest.mark.parametrize(("suffix", "data"), [(".mhd", "ct.raw"), (".nhdr", "ct.raw")])
def test_a_header_without_its_data_file_names_the_missing_file(tmp_path: Path, suffix: str, data: str) -> None:
    header = convert(NIBABEL / "anatomical.nii", tmp_path / f"ct{suffix}")
    (tmp_path / data).unlink()
    refused(header, f"data file {data} is missing")


def test_4d_and_vector_images_are_refused_in_one_line(tmp_path: Path) -> None:
    refused(convert(OBLIQUE, tmp_path / "fmri.mha"), "4D image of size (128, 96, 24, 2)", "one 3D volume")
    rgb = tmp_path / "rgb.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6, 3), np.uint8), isVector=True), str(rgb))
    refused(rgb, "3 values per voxel", "greyscale")


def test_a_header_claiming_a_huge_volume_is_refused_before_reading(tmp_path: Path) -> None:
    header = tmp_path / "huge.mhd"
    header.write_text(
        "ObjectType = Image\nNDims = 3\nDimSize = 100000 100000 100000\nElementType = MET_SHORT\n"
        "ElementDataFile = huge.raw\n"
    )
    (tmp_path / "huge.raw").write_bytes(bytes(64))
    assert volume_shape(header) == (100000, 100000, 100000)
    refused(header, "claims shape (100000, 100000, 100000)", "more than kdsam reads")


def test_one_predicate_names_volume_files() -> None:
    assert all(is_volume_file(Path(f"ct{s}")) for s in (".nii", ".nii.gz", ".mha", ".MHD", ".nrrd", ".nhdr"))
    assert not any(is_volume_file(Path(n)) for n in ("ct.raw", "ct.png", "ct.npz", "ct.dcm", "ct.gz", "ct"))
