"""`kdsam predict --out *.dcm`: a DICOM SEG read back with highdicom equals, voxel for voxel, the NIfTI
the same command writes, references its source instances and names kdsam as the algorithm."""

from __future__ import annotations

import json
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from kdsam import __version__
from kdsam.cli import main
from kdsam.infer.dicomseg import read_seg_labels
from tests.infer.dicom_series import COLUMNS, ROWS, SLICES, ct_series

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
BOXES = ("--box3d", "20,8,1,52,32,4", "--box3d", "4,30,2,20,44,5")


def predict(model: str, *args: str) -> int:
    return main(["predict", "--model", model, *args])


def test_seg_equals_the_nifti_and_references_each_source_instance(tiny_model: str, tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "ct")
    seg_path, nifti_path = tmp_path / "seg.dcm", tmp_path / "mask.nii.gz"
    names = ("--label-name", "liver", "--label-name", "spleen")
    assert predict(tiny_model, "--image", str(tmp_path / "ct"), *BOXES, *names, "--out", str(seg_path)) == 0
    assert predict(tiny_model, "--image", str(tmp_path / "ct"), *BOXES, "--out", str(nifti_path)) == 0

    nifti = np.asarray(nib.load(nifti_path).dataobj)  # (I, J, K) = columns, rows, slices
    assert nifti.shape == (COLUMNS, ROWS, SLICES) and set(np.unique(nifti)) == {0, 1, 2}
    labels = read_seg_labels(seg_path, sources)  # (slices, rows, columns), frame k on source k
    np.testing.assert_array_equal(labels.transpose(2, 1, 0), nifti)

    seg = hd.seg.segread(str(seg_path))
    first = sources[0]
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.SegmentationType == "BINARY" and seg.Modality == "SEG"
    assert seg.StudyInstanceUID == first.StudyInstanceUID and seg.PatientID == first.PatientID
    assert seg.SeriesInstanceUID != first.SeriesInstanceUID
    assert seg.SOPInstanceUID not in {ds.SOPInstanceUID for ds in sources}
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == first.SeriesInstanceUID
    assert {r.ReferencedSOPInstanceUID for r in referenced.ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in sources
    }
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["liver", "spleen"]
    algorithm = seg.SegmentSequence[0].SegmentationAlgorithmIdentificationSequence[0]
    assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("kdsam", __version__)
    assert "model" in algorithm.AlgorithmParameters
    meta = json.loads((tmp_path / "seg.json").read_text())
    assert meta["format"] == "DICOM SEG" and meta["sop_instance_uid"] == seg.SOPInstanceUID

    # a rerun is a new SEG: new series and instance UIDs, never the old ones reused; names from the
    # dataset's labels (nnU-Net's dataset.json), as many as there are boxes
    again, dataset = tmp_path / "again.dcm", tmp_path / "dataset.json"
    dataset.write_text(json.dumps({"labels": {"background": 0, "liver": 1, "spleen": 2, "kidney": 3}}))
    assert (
        predict(tiny_model, "--image", str(tmp_path / "ct"), *BOXES, "--labels", str(dataset), "--out", str(again)) == 0
    )
    second = hd.seg.segread(str(again))
    assert second.SeriesInstanceUID != seg.SeriesInstanceUID and second.SOPInstanceUID != seg.SOPInstanceUID
    assert [s.SegmentLabel for s in second.SegmentSequence] == ["liver", "spleen"]


def test_2d_box_on_one_dicom_file_gives_a_one_frame_seg(tiny_model: str, tmp_path: Path) -> None:
    image = ct_series(tmp_path / "ct", slices=1)[0]
    path = next((tmp_path / "ct").iterdir())
    assert predict(tiny_model, "--image", str(path), "--box", "10,5,50,40", "--out", str(tmp_path / "s.dcm")) == 0
    assert predict(tiny_model, "--image", str(path), "--box", "10,5,50,40", "--out", str(tmp_path / "m.png")) == 0
    png = np.asarray(Image.open(tmp_path / "m.png")) > 0
    labels = read_seg_labels(tmp_path / "s.dcm", [image])
    assert labels.shape == (1, ROWS, COLUMNS)
    assert hd.seg.segread(str(tmp_path / "s.dcm")).SegmentSequence[0].SegmentLabel == "label 1"
    np.testing.assert_array_equal(labels[0] > 0, png)


def _nifti(tmp_path: Path) -> Path:
    path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 3), np.int16), np.eye(4)), path)
    return path


def _png(tmp_path: Path) -> Path:
    path = tmp_path / "photo.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(path)
    return path


def _ct(tmp_path: Path) -> Path:
    ct_series(tmp_path / "ct", 3)
    return tmp_path / "ct"


@pytest.mark.parametrize(
    ("make", "prompt", "message"),
    [
        (_nifti, ("--box3d", "1,1,0,8,8,2"), "needs DICOM input"),
        (_png, ("--box", "1,1,8,8"), "needs DICOM input"),
        (
            _ct,
            ("--box3d", "1,1,0,8,8,2", "--label-name", "a", "--label-name", "b"),
            "2 segment names (--label-name) for 1 label",
        ),
        (
            _ct,
            ("--box3d", "1,1,0,8,8,2", "--label-name", "a", "--labels", "dataset.json"),
            "not both",
        ),
        (
            _ct,
            ("--box3d", "1,1,0,8,8,2", "--labels", "missing.json"),
            "not a readable dataset.json",
        ),
    ],
)
def test_refused_seg_outputs_are_one_line_and_write_nothing(
    tiny_model: str, tmp_path: Path, capsys, make, prompt: tuple[str, ...], message: str
) -> None:
    source = make(tmp_path)
    before = set(tmp_path.rglob("*"))
    assert predict(tiny_model, "--image", str(source), *prompt, "--out", str(tmp_path / "seg.dcm")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err
    assert set(tmp_path.rglob("*")) == before
