"""`kdsam predict` on MetaImage and NRRD volumes: the mask comes back in the input's format, uint8, on
its grid (size, spacing, origin, direction), here on an oblique crop of nibabel's example scan, with
a tiny random student (geometry and plumbing, not accuracy)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nibabel.testing import data_path

from kdsam.cli import main
from kdsam.infer.files import output_name

BOX3D = "8,8,2,40,40,4"  # voxel indices, inclusive: slices 2..4 of 8


def write_oblique(path: Path) -> sitk.Image:
    """A 64x64x8 crop of the first time point of nibabel's example4d.nii.gz (slices tilted about x)."""
    image = sitk.ReadImage(str(Path(data_path) / "example4d.nii.gz"))[32:96, 16:80, 8:16, 0]
    sitk.WriteImage(image, str(path))
    return image


@pytest.mark.parametrize(
    ("source", "out", "written"),
    [
        ("ct.mha", "out", "out/ct.mha"),  # an output folder: <name> in the input's format
        ("ct.nrrd", "out/ct_mask.nrrd", "out/ct_mask.nrrd"),
        ("series/ct.mhd", "out", "out/ct.mha"),  # a folder run; the .raw beside the .mhd is no case
    ],
)
def test_predict_writes_the_mask_in_the_inputs_format_and_grid(
    tiny_model: str, tmp_path: Path, source: str, out: str, written: str
) -> None:
    path = tmp_path / source
    path.parent.mkdir(exist_ok=True)
    image = write_oblique(path)
    (tmp_path / "out").mkdir()
    flag = "--input" if path.suffix == ".mhd" else "--image"
    target = path.parent if flag == "--input" else path
    args = ["predict", "--model", tiny_model, flag, str(target), "--box3d", BOX3D, "--out", str(tmp_path / out)]
    assert main(args) == 0
    result = tmp_path / written
    mask = sitk.ReadImage(str(result))
    assert mask.GetPixelID() == sitk.sitkUInt8 and mask.GetSize() == image.GetSize() == (64, 64, 8)
    for attribute in ("GetSpacing", "GetOrigin", "GetDirection"):
        np.testing.assert_allclose(getattr(mask, attribute)(), getattr(image, attribute)(), atol=1e-6)
    labels = sitk.GetArrayFromImage(mask)  # (z, y, x)
    assert set(np.unique(labels)) <= {0, 1} and not labels[:2].any() and not labels[5:].any()
    record = json.loads(result.with_name(result.name.split(".")[0] + ".json").read_text())
    assert record["input"] == str(path) and record["output"] == str(result)


def test_a_volume_mask_named_as_no_single_file_format_is_refused(tiny_model: str, tmp_path: Path, capsys) -> None:
    path = tmp_path / "ct.mha"
    write_oblique(path)
    args = ["predict", "--model", tiny_model, "--image", str(path), "--box3d", BOX3D, "--out", str(tmp_path / "m.mhd")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "name it .nii.gz, .mha or .nrrd" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.mha"]


def test_output_names_follow_the_inputs_format(tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    assert [output_name(Path(n), "volume") for n in ("a.mha", "b.MHD", "c.nrrd", "d.nhdr", "e.nii", "f.nii.gz")] == [
        "a.mha",
        "b.mha",
        "c.nrrd",
        "d.nrrd",
        "e.nii.gz",
        "f.nii.gz",
    ]
    assert output_name(series, "volume") == "series.nii.gz"  # DICOM in, NIfTI out
