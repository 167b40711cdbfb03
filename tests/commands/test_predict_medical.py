"""`kdsam predict` on volumes, DICOM series, challenge npz cases and folders, with a tiny random student
(geometry, bookkeeping and errors; accuracy is tested with the real teacher in tests/eval)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file

from kdsam.cli import main
from kdsam.models.loading import save_model
from kdsam.models.student import build_student


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(build_student(None, "resnet18", 64), path)
    return str(path)


def ball_volume(shape=(40, 32, 9), centre=(20, 15, 4), radii=(10, 8, 3)) -> tuple[np.ndarray, np.ndarray]:
    """(int16 volume in HU-like units, bool ball) on the NIfTI (i, j, k) grid."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"))
    ball = (((grid - np.array(centre)[:, None, None, None]) / np.array(radii)[:, None, None, None]) ** 2).sum(0) < 1
    rng = np.random.default_rng(0)
    return (np.where(ball, 300, 0) + rng.integers(-20, 20, shape)).astype(np.int16), ball


@pytest.fixture
def nifti(tmp_path: Path) -> Path:
    data, _ = ball_volume()
    affine = np.array([[-0.8, 0, 0, 10], [0, 0.9, 0, -20], [0, 0, 2.5, 5], [0, 0, 0, 1]])
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def predict(model: str, *args: str) -> int:
    return main(["predict", "--model", model, *args])


def test_volume_mask_keeps_shape_affine_and_spacing(tiny_model: str, nifti: Path, tmp_path: Path) -> None:
    out = tmp_path / "out" / "mask.nii.gz"
    overlay = tmp_path / "slices.png"
    assert (
        predict(
            tiny_model,
            "--image",
            str(nifti),
            "--box3d",
            "10,7,2,30,23,6",
            "--out",
            str(out),
            "--window",
            "soft-tissue",
            "--overlay",
            str(overlay),
        )
        == 0
    )
    src, mask = nib.load(nifti), nib.load(out)
    assert mask.shape == src.shape and mask.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(mask.affine, src.affine)
    assert mask.header.get_zooms() == src.header.get_zooms()
    labels = np.asarray(mask.dataobj)
    assert set(np.unique(labels)) <= {0, 1}
    assert not labels[..., :2].any() and not labels[..., 7:].any()  # only slices z0..z1 are segmented
    meta = json.loads((tmp_path / "out" / "mask.json").read_text())
    window = {"method": "window", "level": 40.0, "width": 400.0, "preset": "soft-tissue", "non_finite_voxels": 0}
    assert meta["intensity"] == window
    assert meta["boxes3d"] == [[10, 7, 2, 30, 23, 6]] and meta["spacing"] == pytest.approx([0.8, 0.9, 2.5])
    assert overlay.stat().st_size > 0


@pytest.mark.parametrize(
    ("box", "message"),
    [
        ("10,7,2,30,23,9", "z range 2..9 is not inside 0..8"),
        ("-1,7,2,30,23,6", "x range"),
        ("10,7,2,30,40,6", "y range"),
        ("30,7,2,10,23,6", "at most"),
    ],
)
def test_box_outside_the_volume_is_one_line_and_writes_nothing(
    tiny_model: str, nifti: Path, tmp_path: Path, capsys, box: str, message: str
) -> None:
    assert predict(tiny_model, "--image", str(nifti), "--box3d", box, "--out", str(tmp_path / "m.nii.gz")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert list(tmp_path.iterdir()) == [nifti]


def test_dicom_series_in_nifti_out_on_the_scanner_grid(tiny_model: str, tmp_path: Path) -> None:
    series = tmp_path / "series"
    series.mkdir()
    for k in range(4):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 5 * (3 - k)]  # written in reverse position order
        ds.save_as(series / f"{k}.dcm")
    assert predict(tiny_model, "--image", str(series), "--box3d", "30,30,0,90,90,3", "--out", str(tmp_path)) == 0
    mask = nib.load(tmp_path / "series.nii.gz")
    assert mask.shape == (128, 128, 4)
    assert mask.header.get_zooms() == pytest.approx((0.661468, 0.661468, 5.0), abs=1e-5)
    np.testing.assert_allclose(mask.affine @ [0, 0, 0, 1], [158.135803, 179.035797, -75.699997, 1], atol=1e-4)
    assert json.loads((tmp_path / "series.json").read_text())["intensity"]["preset"] == "soft-tissue"


def test_negative_box_reaches_the_check_not_argparse(tiny_model: str, tmp_path: Path, capsys) -> None:
    image = Path(get_testdata_file("CT_small.dcm"))
    assert predict(tiny_model, "--image", str(image), "--box", "-5,0,10,10", "--out", str(tmp_path / "m.png")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "outside" in err and "-5,0,10,10" in err


def test_out_folder_gets_the_mask_inside(tiny_model: str, tmp_path: Path) -> None:
    image = Path(get_testdata_file("CT_small.dcm"))
    assert predict(tiny_model, "--image", str(image), "--box", "20,20,100,100", "--out", str(tmp_path)) == 0
    assert (tmp_path / "CT_small.png").is_file() and (tmp_path / "CT_small.json").is_file()


def test_folder_of_volumes_and_images_takes_boxes_from_json_and_skips_bad_files(
    tiny_model: str, nifti: Path, tmp_path: Path, capsys
) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    nifti.rename(inputs / "ct.nii.gz")
    Image.fromarray(np.full((40, 50), 90, np.uint8)).save(inputs / "photo.png")
    np.savez(inputs / "broken.npz", imgs=np.zeros((8, 8, 3), np.uint8))  # no boxes
    boxes = tmp_path / "boxes.json"
    boxes.write_text(json.dumps({"ct.nii.gz": [[10, 7, 2, 30, 23, 6], [0, 0, 0, 5, 5, 1]], "photo": [[5, 5, 30, 30]]}))
    argv = ["--input", str(inputs), "--out", str(out), "--boxes", str(boxes)]
    assert predict(tiny_model, *argv) == 1  # one case failed
    captured = capsys.readouterr()
    assert "broken.npz: neither boxes nor clicks" in captured.err  # a case without prompts is named and skipped
    assert "2 segmented, 0 already done, 1 skipped" in captured.out
    labels = np.asarray(nib.load(out / "ct.nii.gz").dataobj)
    assert labels.shape == (40, 32, 9) and set(np.unique(labels)) <= {0, 1, 2}
    assert (out / "photo.png").is_file() and not (out / "broken.npz").exists()
    assert predict(tiny_model, *argv) == 1
    assert "0 segmented, 2 already done, 1 skipped" in capsys.readouterr().out


def test_exports_split_their_threads_only_where_two_slices_run_at_once():
    from kdsam.commands.predict_case import slice_by_slice

    assert not slice_by_slice([(Path("a.png"), "image"), (Path("2DCT_case.npz"), "npz"), (Path("b.dcm"), "image")])
    assert slice_by_slice([(Path("a.png"), "image"), (Path("3DCT_case.npz"), "npz")])
    assert slice_by_slice([(Path("ct"), "volume")])
