"""The /v1/pacs endpoints against a real Orthanc (tests/infer/orthanc.py): list studies and series,
open a series as a volume the /v1/volumes routes then show, store the page's label map as a SEG."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from fastapi.testclient import TestClient

from kdsam.commands.serve import _pacs
from kdsam.errors import KdsamError
from kdsam.infer.dicomseg import read_seg_labels
from kdsam.infer.dicomweb import Target
from kdsam.serve.app import create_app
from tests.infer.dicom_series import COLUMNS, ROWS, SLICES, ct_series
from tests.infer.orthanc import HOST, Orthanc, free_port, orthanc


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[Orthanc]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def test_list_open_and_store_a_seg(engine, pacs: Orthanc, tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "ct")
    pacs.upload(sorted((tmp_path / "ct").iterdir()))
    study, series = sources[0].StudyInstanceUID, sources[0].SeriesInstanceUID
    client = TestClient(create_app(engine, dicomweb=Target(pacs.dicomweb)))

    studies = client.get("/v1/pacs/studies").json()
    assert study in [s["study_uid"] for s in studies]
    listed = client.get(f"/v1/pacs/studies/{study}/series").json()
    assert [(s["series_uid"], s["modality"], s["image"]) for s in listed] == [(series, "CT", True)]

    opened = client.post(f"/v1/pacs/studies/{study}/series/{series}/open", params={"window": "soft-tissue"}).json()
    assert opened["kind"] == "volume" and (opened["width"], opened["height"], opened["depth"]) == (
        COLUMNS,
        ROWS,
        SLICES,
    )
    volume = opened["volume_id"]
    assert client.get(f"/v1/volumes/{volume}").json()["depth"] == SLICES  # the volume routes show it

    labels = np.zeros((SLICES, ROWS, COLUMNS), np.uint8)
    labels[1:4, 10:30, 20:50] = 1
    labels[2, 35:45, 5:15] = 2
    answer = client.post(
        f"/v1/pacs/volumes/{volume}/seg", params={"name": ["ball", "spot"]}, content=gzip.compress(labels.tobytes())
    )
    assert answer.status_code == 200, answer.text
    stored = answer.json()
    assert stored["study_instance_uid"] == study and stored["segments"] == ["ball", "spot"]
    segs = DICOMwebClient(pacs.dicomweb).search_for_series(study, search_filters={"Modality": "SEG"})
    assert [s["0020000E"]["Value"][0] for s in segs] == [stored["series_instance_uid"]]
    (seg,) = DICOMwebClient(pacs.dicomweb).retrieve_series(study, stored["series_instance_uid"])
    assert seg.SOPInstanceUID == stored["sop_instance_uid"]
    seg.save_as(tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg_labels(tmp_path / "seg.dcm", sources), labels)

    bad = client.post(
        f"/v1/pacs/volumes/{volume}/seg", params={"name": ["a", "b", "c"]}, content=gzip.compress(labels.tobytes())
    )
    assert bad.status_code == 400 and "3 segment names (--label-name) for 2 label" in bad.json()["error"]
    assert client.get("/v1/pacs/studies/not-a-uid/series").status_code == 400


def test_a_series_over_max_pixels_is_a_413(engine, pacs: Orthanc, tmp_path: Path) -> None:
    sources = ct_series(tmp_path / "ct")
    pacs.upload(sorted((tmp_path / "ct").iterdir()))
    client = TestClient(create_app(engine, dicomweb=Target(pacs.dicomweb), max_pixels=ROWS * COLUMNS - 1))
    answer = client.post(f"/v1/pacs/studies/{sources[0].StudyInstanceUID}/series/{sources[0].SeriesInstanceUID}/open")
    assert answer.status_code == 413 and "pixel limit (--max-pixels)" in answer.json()["error"], answer.text


def test_a_pacs_that_is_down_is_a_502_with_one_line(engine) -> None:
    client = TestClient(create_app(engine, dicomweb=Target(f"http://{HOST}:{free_port()}/dicom-web")))
    answer = client.get("/v1/pacs/studies")
    assert answer.status_code == 502 and "cannot connect" in answer.json()["error"]
    assert "\n" not in answer.json()["error"]


def test_without_dicomweb_there_is_no_pacs_api(engine) -> None:
    assert TestClient(create_app(engine)).get("/v1/pacs/studies").status_code == 404


def test_serve_takes_a_service_root_only() -> None:
    assert _pacs("http://pacs/dicom-web") == _pacs("dicomweb:http://pacs/dicom-web") == Target("http://pacs/dicom-web")
    with pytest.raises(KdsamError, match="service root"):
        _pacs("http://pacs/dicom-web/studies/1.2")
