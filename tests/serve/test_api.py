"""kdsam serve's HTTP API in process: masks equal the Python predictor's, sessions, bad requests, concurrency."""

from __future__ import annotations

import json
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from kdsam.cli import main
from kdsam.predictor import KDSamPredictor
from kdsam.serve.app import create_app
from tests.serve.conftest import decode_png

BOXES = [[60.0, 40.0, 200.0, 180.0], [10.0, 10.0, 90.0, 80.0]]


@pytest.fixture
def client(engine) -> TestClient:
    return TestClient(create_app(engine, max_upload_bytes=2_000_000, max_pixels=4_000_000))


def _segment(client: TestClient, data: bytes, boxes: str | None, name: str = "img.png"):
    fields = {} if boxes is None else {"boxes": boxes}
    return client.post("/v1/segment", files={"image": (name, data, "image/png")}, data=fields)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (and holds no pixels): a decompression bomb's shape."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(bytes(64))) + chunk(b"IEND", b"")


def test_segment_equals_the_python_predictor(client, tiny_model, image, image_png) -> None:
    response = _segment(client, image_png, json.dumps(BOXES))
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["width"], body["height"]) == (image.shape[1], image.shape[0])
    predictor = KDSamPredictor(tiny_model)
    predictor.set_image(image)
    masks, scores, _ = predictor.predict_boxes(np.array(BOXES))
    assert [m["box"] for m in body["masks"]] == BOXES
    for got, want, score in zip(body["masks"], masks[:, 0], scores[:, 0], strict=True):
        np.testing.assert_array_equal(decode_png(got["png"]), want)
        assert got["score"] == pytest.approx(float(score), abs=1e-6)
    assert client.get("/healthz").json()["status"] == "ok"
    assert {"/v1/segment", "/v1/sessions", "/v1/sessions/{session_id}/segment"} <= client.get("/openapi.json").json()[
        "paths"
    ].keys()


def test_session_embeds_once_and_decodes_boxes_and_clicks(client, engine, tiny_model, image, image_png) -> None:
    opened = client.post("/v1/sessions", files={"image": ("a.png", image_png, "image/png")}).json()
    sid = opened["session_id"]
    shown = client.get(f"/v1/sessions/{sid}/image")
    assert shown.headers["content-type"] == "image/png" and shown.content[:4] == b"\x89PNG"
    calls = []
    engine.predictor.set_image = lambda *a, **k: calls.append(a)  # the encoder must not run again
    boxed = client.post(f"/v1/sessions/{sid}/segment", json={"boxes": BOXES}).json()
    stateless = _segment(TestClient(create_app(type(engine)(KDSamPredictor(tiny_model)))), image_png, json.dumps(BOXES))
    assert [m["png"] for m in boxed["masks"]] == [m["png"] for m in stateless.json()["masks"]]
    clicks = {"boxes": BOXES[:1], "points": [[130, 110], [70, 50]], "point_labels": [1, 0]}
    clicked = client.post(f"/v1/sessions/{sid}/segment", json=clicks).json()
    refined = client.post(f"/v1/sessions/{sid}/segment", json=clicks | {"use_previous_mask": True}).json()
    assert calls == []
    predictor = KDSamPredictor(tiny_model)
    predictor.set_image(image)
    args = {"point_coords": np.array(clicks["points"], float), "point_labels": np.array([1, 0]),
            "box": np.array(BOXES[0]), "multimask_output": False}  # fmt: skip
    want, _, low_res = predictor.predict(**args)
    np.testing.assert_array_equal(decode_png(clicked["masks"][0]["png"]), want[0])
    want_refined, _, _ = predictor.predict(**args, mask_input=low_res)
    np.testing.assert_array_equal(decode_png(refined["masks"][0]["png"]), want_refined[0])
    assert client.delete(f"/v1/sessions/{sid}").json() == {"closed": True}
    assert client.post(f"/v1/sessions/{sid}/segment", json={"boxes": BOXES}).status_code == 404


def test_sessions_are_a_bounded_lru(client, image_png) -> None:
    ids = [client.post("/v1/sessions", files={"image": ("a.png", image_png)}).json()["session_id"] for _ in range(2)]
    client.post(f"/v1/sessions/{ids[0]}/segment", json={"boxes": BOXES})  # ids[0] is now the most recent
    client.post("/v1/sessions", files={"image": ("a.png", image_png)})  # max_sessions=2: evicts ids[1]
    assert client.post(f"/v1/sessions/{ids[0]}/segment", json={"boxes": BOXES}).status_code == 200
    gone = client.post(f"/v1/sessions/{ids[1]}/segment", json={"boxes": BOXES})
    assert gone.status_code == 404 and "upload the image again" in gone.json()["error"]
    assert client.get("/healthz").json()["sessions"] == 2


@pytest.mark.parametrize(
    ("data", "boxes", "status", "words"),
    [
        (b"%PDF-1.4 not an image", "[[1, 1, 5, 5]]", 400, "unreadable"),
        (b"", "[[1, 1, 5, 5]]", 400, "empty file"),
        (_png_header(60000, 60000), "[[1, 1, 5, 5]]", 413, "pixel limit"),
        (None, "[[1, 1, 5, 5]]", 400, "no image"),
        (b"x" * 2_000_001, "[[1, 1, 5, 5]]", 413, "upload limit"),
        ("image", "[[1, 1, 5]]", 400, "4 finite numbers"),
        ("image", "[[1, 1, 5, 5", 400, "not JSON"),
        ("image", '{"x": 1}', 400, "JSON list"),
        ("image", "[[50, 50, 10, 10]]", 400, "X0 must be less than X1"),
        ("image", "[[0, 0, 5000, 50]]", 400, "outside"),
        ("image", "[]", 400, "at least one"),
        ("image", None, 400, "at least one"),
    ],
)
def test_bad_requests_get_a_one_line_4xx_and_the_server_keeps_serving(client, image_png, data, boxes, status, words):
    files = None if data is None else {"image": ("f.png", image_png if data == "image" else data, "image/png")}
    response = client.post("/v1/segment", files=files, data={} if boxes is None else {"boxes": boxes})
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert words in error and "\n" not in error
    assert _segment(client, image_png, json.dumps(BOXES[:1])).status_code == 200


def test_session_prompt_errors(client, image_png) -> None:
    sid = client.post("/v1/sessions", files={"image": ("a.png", image_png)}).json()["session_id"]
    for body, words in [
        ({}, "give boxes, points"),
        ({"points": [[5, 5]], "boxes": BOXES}, "at most one box"),
        ({"points": [[5000, 5]]}, "outside"),
        ({"points": [[308, 5]]}, "outside the 308x304 image"),  # x == W: past the last pixel, as in kdsam predict
        ({"points": [[5, 5]], "point_labels": [1, 1]}, "one label per point"),
        ({"points": "nope"}, "points"),
    ]:
        response = client.post(f"/v1/sessions/{sid}/segment", json=body)
        assert 400 <= response.status_code < 500 and words in response.json()["error"], (body, response.text)


def test_concurrent_requests_are_queued_not_crashed(client, image_png) -> None:
    def one(_: int) -> int:
        return _segment(client, image_png, json.dumps(BOXES)).status_code

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(one, range(8))) == [200] * 8


def test_serve_refuses_a_runtime_without_an_export(capsys) -> None:
    assert main(["serve", "--model", "teacher:litemedsam", "--runtime", "onnxruntime-int8"]) == 2
    assert "ONNX export" in capsys.readouterr().err


def test_page_and_its_script_are_served_from_the_package(client) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text and "http" not in page.text.split("<body>")[1]
    script = client.get("/static/app.js")
    assert script.status_code == 200 and "/v1/sessions" in script.text


def test_load_test_on_loopback_counts_latency_and_errors(engine, image_png) -> None:
    from kdsam.errors import KdsamError
    from kdsam.serve.loadtest import run_load_test, serving

    with serving(create_app(engine)) as url:
        result = run_load_test(url, image_png, BOXES[:1], clients=4, requests=4, deadline_s=120)
    for workload in ("segment", "session_prompt"):
        r = result[workload]
        assert (r["ok"], r["errors"]) == (4, 0) and r["latency_ms_p95"] >= r["latency_ms_p50"] > 0
    with pytest.raises(KdsamError, match="only targets this machine"):
        run_load_test("http://example.org:8000", image_png, BOXES[:1])


def test_kdsam_serve_prints_its_url_and_stops_on_ctrl_c(tiny_model, tmp_path) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    from kdsam.models.loading import save_model

    save_model(tiny_model, tmp_path / "model.pt")
    port = _free_port()
    cmd = [sys.executable, "-m", "kdsam.cli", "serve", "--model", str(tmp_path / "model.pt"), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=os.environ.copy())
    try:
        line = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line, line
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert time.monotonic() < deadline, "the server did not answer"
                time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        assert "stopped" in proc.stdout.read()
    finally:
        proc.kill()


def test_ct_volume_opens_at_its_middle_slice_in_the_chosen_window(client) -> None:
    """The page's window selector: a real MR volume shipped with nibabel, and a CT slice from pydicom."""
    from nibabel.testing import data_path
    from pydicom.data import get_testdata_file

    nifti = Path(data_path) / "anatomical.nii"
    opened = client.post("/v1/sessions", files={"image": ("anatomical.nii", nifti.read_bytes())})
    assert opened.status_code == 200
    ct = Path(get_testdata_file("CT_small.dcm"))
    grey = {}
    for window in ("soft-tissue", "bone"):
        reply = client.post("/v1/sessions", files={"image": ("ct.dcm", ct.read_bytes())}, data={"window": window})
        assert reply.status_code == 200
        grey[window] = np.asarray(decode_png_bytes(client.get(f"/v1/sessions/{reply.json()['session_id']}/image")))
    assert not np.array_equal(grey["soft-tissue"], grey["bone"])  # the window changes what the model sees
    bad = client.post("/v1/sessions", files={"image": ("ct.dcm", ct.read_bytes())}, data={"window": "nonsense"})
    assert bad.status_code == 400 and "\n" not in bad.json()["error"]


def decode_png_bytes(response) -> object:
    from io import BytesIO

    from PIL import Image

    return Image.open(BytesIO(response.content))


def test_dicom_upload_is_measured_by_its_own_header_not_its_tiff_preamble(engine):
    """pydicom's CT_small.dcm is 128x128 and its preamble is a TIFF header: the pixel limit must read
    the DICOM header (and PIL must not be asked first)."""
    from pydicom.data import get_testdata_file

    ct = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    fields = {"files": {"image": ("ct.dcm", ct)}, "data": {"boxes": "[[1, 1, 5, 5]]"}}
    reply = TestClient(create_app(engine, max_pixels=128 * 128 - 1)).post("/v1/segment", **fields)
    assert reply.status_code == 413 and "16384 pixels" in reply.json()["error"]
    assert TestClient(create_app(engine, max_pixels=128 * 128)).post("/v1/segment", **fields).status_code == 200
