"""`kdsam predict` against a real PACS (Orthanc + its DICOMweb plugin): a series read by WADO-RS, the
SEG stored by STOW-RS and found again by QIDO-RS; every failure is one line, exit 2, nothing partial
on the server, the SEG kept on disk when the store fails; credentials never leak."""

from __future__ import annotations

import http.server
import json
import logging
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pytest
from dicomweb_client import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from PIL import Image

from kdsam.cli import main
from kdsam.errors import KdsamError
from kdsam.infer.dicomseg import read_seg_labels
from kdsam.infer.dicomweb import Target, parse_target
from tests.infer.dicom_series import ct_series
from tests.infer.orthanc import HOST, Orthanc, free_port, orthanc

BOX = ("--box3d", "20,8,1,52,32,4")
USER, PASSWORD = "alice", "s3cret-Pa55"
REFUSE_STOW = (  # Orthanc's own HTTP filter: every POST to DICOMweb (a STOW-RS) is answered 403
    "function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)\n"
    '  return not (method == "POST" and string.find(uri, "dicom%-web"))\nend\n'
)


def predict(model: str, *args: str) -> int:
    return main(["predict", "--model", model, *args])


@pytest.fixture(autouse=True)
def _scratch_in_tmp(tmp_path: Path, monkeypatch) -> Path:
    """Kept SEGs land under this test's folder, where the test can look for them."""
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    for name in ("KDSAM_DICOMWEB_USER", "KDSAM_DICOMWEB_PASSWORD", "KDSAM_DICOMWEB_TOKEN", "KDSAM_DICOMWEB_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "tmp"


@pytest.fixture(scope="module")
def pacs(tmp_path_factory) -> Iterator[Orthanc]:
    with orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


def _client(server: Orthanc) -> DICOMwebClient:
    session = create_session_from_user_pass(*server.user) if server.user else None
    return DICOMwebClient(server.dicomweb, session=session)


def _upload(server: Orthanc, folder: Path, study: str | None = None) -> list:
    datasets = ct_series(folder, study=study)
    server.upload(sorted(folder.iterdir()))
    return datasets


def _series_address(server: Orthanc, ds) -> str:
    return f"dicomweb:{server.dicomweb}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"


def _segs(server: Orthanc, study: str) -> list[str]:
    """SEG series in the study, found the way a viewer finds them: QIDO-RS by modality."""
    found = _client(server).search_for_series(study, search_filters={"Modality": "SEG"})
    return [item["0020000E"]["Value"][0] for item in found]


def test_addresses_parse_and_credentials_in_them_are_refused_without_echo() -> None:
    root = "http://pacs:8042/dicom-web"
    assert parse_target(f"dicomweb:{root}/") == Target(root)
    assert parse_target(f"dicomweb:{root}/studies/1.2.3/series/4.5") == Target(root, "1.2.3", "4.5")
    assert str(Target(root, "1.2", "3")) == f"dicomweb:{root}/studies/1.2/series/3"
    with pytest.raises(KdsamError, match="KDSAM_DICOMWEB_USER") as err:
        parse_target("dicomweb:http://bob:hunter2@pacs/dicom-web")
    assert "hunter2" not in str(err.value)
    for bad in ("dicomweb:pacs/dicom-web", f"dicomweb:{root}/studies/1.2/series", f"dicomweb:{root}/studies/x1"):
        with pytest.raises(KdsamError):
            parse_target(bad)


def test_series_over_dicomweb_to_a_seg_in_the_same_study(tiny_model: str, pacs: Orthanc, tmp_path: Path, capsys):
    """The end-to-end test: upload, segment over DICOMweb, find the SEG by QIDO-RS; it equals the NIfTI
    of the same series read from disk, voxel for voxel."""
    sources = _upload(pacs, tmp_path / "ct")
    study = sources[0].StudyInstanceUID
    before = _segs(pacs, study)
    address = _series_address(pacs, sources[0])
    assert (
        predict(tiny_model, "--image", address, *BOX, "--label-name", "ball", "--out", f"dicomweb:{pacs.dicomweb}") == 0
    )
    out = capsys.readouterr().out
    new = sorted(set(_segs(pacs, study)) - set(before))
    assert len(new) == 1 and new[0] in out
    instances = _client(pacs).retrieve_series(study, new[0])
    assert len(instances) == 1 and instances[0].SOPInstanceUID in out
    seg = hd.seg.Segmentation.from_dataset(instances[0])
    assert seg.SegmentSequence[0].SegmentLabel == "ball" and seg.StudyInstanceUID == study
    assert predict(tiny_model, "--image", str(tmp_path / "ct"), *BOX, "--out", str(tmp_path / "mask.nii.gz")) == 0
    nifti = np.asarray(nib.load(tmp_path / "mask.nii.gz").dataobj)
    assert nifti.any()
    seg.save_as(tmp_path / "seg.dcm")
    np.testing.assert_array_equal(read_seg_labels(tmp_path / "seg.dcm", sources).transpose(2, 1, 0), nifti)
    assert not any((tmp_path / "tmp").iterdir())  # the local copy goes once the PACS holds the SEG


def test_a_one_image_series_reads_as_a_2d_image(tiny_model: str, pacs: Orthanc, tmp_path: Path) -> None:
    """As a single local DICOM file is: --box in pixels, the same mask as from the file on disk."""
    (image,) = ct_series(tmp_path / "ct", slices=1)
    pacs.upload(list((tmp_path / "ct").iterdir()))
    box = ("--box", "10,5,50,40")
    assert predict(tiny_model, "--image", _series_address(pacs, image), *box, "--out", str(tmp_path / "s.dcm")) == 0
    local = next((tmp_path / "ct").iterdir())
    assert predict(tiny_model, "--image", str(local), *box, "--out", str(tmp_path / "m.png")) == 0
    png = np.asarray(Image.open(tmp_path / "m.png")) > 0
    assert png.any()
    np.testing.assert_array_equal(read_seg_labels(tmp_path / "s.dcm", [image])[0] > 0, png)
    assert json.loads((tmp_path / "s.json").read_text())["kind"] == "image"


def test_a_study_segments_each_image_series_and_skips_segs(tiny_model: str, pacs: Orthanc, tmp_path: Path, capsys):
    first = _upload(pacs, tmp_path / "a")
    study = first[0].StudyInstanceUID
    _upload(pacs, tmp_path / "b", study)
    assert (
        predict(tiny_model, "--image", _series_address(pacs, first[0]), *BOX, "--out", f"dicomweb:{pacs.dicomweb}") == 0
    )
    before = _segs(pacs, study)
    capsys.readouterr()
    assert (
        predict(
            tiny_model, "--input", f"dicomweb:{pacs.dicomweb}/studies/{study}", *BOX, "--out", str(tmp_path / "out")
        )
        == 0
    )
    images = [s for s in _client(pacs).search_for_series(study) if s["00080060"]["Value"][0] != "SEG"]
    assert len(images) == 2
    written = sorted(p.name for p in (tmp_path / "out").glob("*.dcm"))
    assert written == sorted(f"{s['0020000E']['Value'][0]}.dcm" for s in images)  # not one per SEG series
    assert _segs(pacs, study) == before
    assert f"{len(images)} of {len(images)} image series segmented" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / written[0].replace(".dcm", ".json")).read_text())
    assert meta["input"].startswith(f"dicomweb:{pacs.dicomweb}/studies/{study}/series/")


def _one_line_exit_2(capsys) -> str:
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("kdsam predict: error:")
    return captured.err


def test_a_series_without_images_is_one_line(
    tiny_model: str, pacs: Orthanc, tmp_path: Path, capsys, _scratch_in_tmp: Path
) -> None:
    sources = _upload(pacs, tmp_path / "ct")
    study = sources[0].StudyInstanceUID
    assert (
        predict(tiny_model, "--image", _series_address(pacs, sources[0]), *BOX, "--out", f"dicomweb:{pacs.dicomweb}")
        == 0
    )
    before = _segs(pacs, study)
    seg_series = f"dicomweb:{pacs.dicomweb}/studies/{study}/series/{before[0]}"
    capsys.readouterr()
    assert predict(tiny_model, "--image", seg_series, *BOX, "--out", f"dicomweb:{pacs.dicomweb}") == 2
    err = _one_line_exit_2(capsys)
    assert "holds no images" in err and "modality SEG" in err
    assert not any(_scratch_in_tmp.iterdir())  # no SEG was made, so no folder is left for one
    assert _segs(pacs, study) == before


def test_pacs_down_is_one_line(tiny_model: str, tmp_path: Path, capsys) -> None:
    down = f"dicomweb:http://{HOST}:{free_port()}/dicom-web"
    assert predict(tiny_model, "--image", f"{down}/studies/1.2/series/3.4", *BOX, "--out", str(tmp_path / "s.dcm")) == 2
    assert "cannot connect" in _one_line_exit_2(capsys)


@pytest.fixture
def silent_server() -> Iterator[str]:
    """Accepts connections and never answers: a PACS that hangs."""
    with socket.socket() as server:
        server.bind((HOST, 0))
        server.listen(8)
        yield f"http://{HOST}:{server.getsockname()[1]}/dicom-web"


def test_a_timeout_is_one_line(tiny_model: str, silent_server: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("KDSAM_DICOMWEB_TIMEOUT", "0.5")
    address = f"dicomweb:{silent_server}/studies/1.2/series/3.4"
    start = time.monotonic()
    assert predict(tiny_model, "--image", address, *BOX, "--out", str(tmp_path / "s.dcm")) == 2
    assert time.monotonic() - start < 15  # one attempt: retries once took 5 timeouts + 30 s of pauses
    assert "no answer within 0.5 s" in _one_line_exit_2(capsys)
    assert not (tmp_path / "s.dcm").exists()


class _Refusing(http.server.BaseHTTPRequestHandler):
    """A STOW-RS endpoint that refuses every instance the ways the standard allows: 409 (none stored)
    or 202 (some stored), with a FailedSOPSequence naming it (0xA700: out of resources)."""

    status = 409

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"00081198": {"vr": "SQ", "Value": [{"00081197": {"vr": "US", "Value": [42752]}}]}})
        self.send_response(self.status)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(params=[409, 202])
def refusing_server(request) -> Iterator[str]:
    handler = type("Refusing", (_Refusing,), {"status": request.param})
    server = http.server.ThreadingHTTPServer((HOST, 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://{HOST}:{server.server_address[1]}/dicom-web"
    server.shutdown()
    server.server_close()


def _kept_seg(err: str, scratch: Path) -> Path:
    kept = sorted(scratch.glob("kdsam-seg-*/*.dcm"))
    assert len(kept) == 1 and f"the SEG is kept at {kept[0]}" in err
    assert kept[0].parent.stat().st_mode & 0o777 == 0o700  # the SEG names the patient
    assert hd.seg.segread(str(kept[0])).Modality == "SEG"
    return kept[0]


def test_a_stow_refusal_keeps_the_seg(tiny_model: str, refusing_server: str, tmp_path: Path, capsys, _scratch_in_tmp):
    ct_series(tmp_path / "ct")
    assert predict(tiny_model, "--image", str(tmp_path / "ct"), *BOX, "--out", f"dicomweb:{refusing_server}") == 2
    err = _one_line_exit_2(capsys)
    assert "409" in err or "refused it (reason 42752)" in err
    _kept_seg(err, _scratch_in_tmp)


def test_a_403_on_store_keeps_the_seg_and_stores_nothing(tiny_model: str, tmp_path: Path, capsys, _scratch_in_tmp):
    with orthanc(tmp_path / "pacs", lua=REFUSE_STOW) as server:
        sources = _upload(server, tmp_path / "ct")
        assert (
            predict(
                tiny_model, "--image", _series_address(server, sources[0]), *BOX, "--out", f"dicomweb:{server.dicomweb}"
            )
            == 2
        )
        err = _one_line_exit_2(capsys)
        assert "403 Forbidden" in err
        _kept_seg(err, _scratch_in_tmp)
        assert _segs(server, sources[0].StudyInstanceUID) == []
        assert len(server.rest("/instances")) == len(sources)


def test_credentials_work_and_never_leak(tiny_model: str, tmp_path: Path, capsys, caplog, monkeypatch, _scratch_in_tmp):
    caplog.set_level(logging.DEBUG)
    with orthanc(tmp_path / "pacs", user=(USER, PASSWORD)) as server:
        sources = _upload(server, tmp_path / "ct")
        address = _series_address(server, sources[0])
        # no credentials, wrong ones, a token Orthanc does not take: 401, one line each
        for env in (
            {},
            {"KDSAM_DICOMWEB_USER": USER, "KDSAM_DICOMWEB_PASSWORD": "not-" + PASSWORD},
            {"KDSAM_DICOMWEB_TOKEN": "tok-" + PASSWORD},
        ):
            for name in ("KDSAM_DICOMWEB_USER", "KDSAM_DICOMWEB_PASSWORD", "KDSAM_DICOMWEB_TOKEN"):
                monkeypatch.delenv(name, raising=False)
            for name, value in env.items():
                monkeypatch.setenv(name, value)
            assert predict(tiny_model, "--image", address, *BOX, "--out", str(tmp_path / "s.dcm")) == 2
            assert "401 Unauthorized" in _one_line_exit_2(capsys)
        monkeypatch.delenv("KDSAM_DICOMWEB_TOKEN")
        monkeypatch.setenv("KDSAM_DICOMWEB_USER", USER)
        monkeypatch.setenv("KDSAM_DICOMWEB_PASSWORD", PASSWORD)
        assert predict(tiny_model, "--image", address, *BOX, "--out", str(tmp_path / "s.dcm")) == 0
        assert predict(tiny_model, "--image", address, *BOX, "--out", f"dicomweb:{server.dicomweb}") == 0
        assert len(_segs(server, sources[0].StudyInstanceUID)) == 1
    # a store that fails keeps its SEG and sidecar: neither may carry the credentials either
    refused = f"dicomweb:http://{HOST}:{free_port()}/dicom-web"
    assert predict(tiny_model, "--image", str(tmp_path / "ct"), *BOX, "--out", refused) == 2
    captured = capsys.readouterr()
    texts = [captured.out, captured.err, caplog.text, (tmp_path / "s.json").read_text()]
    texts += [p.read_text() for p in _scratch_in_tmp.glob("kdsam-seg-*/*.json")]
    assert len(texts) == 5
    for text in texts:
        assert PASSWORD not in text
    assert json.loads(texts[3])["input"] == address
