"""Volume sessions over HTTP: NIfTI, DICOM series and 3D npz open as volumes; a 3D box answers as
`kdsam.infer.volume.segment_stack`, a slice's clicks as the 2D click path; the label map comes back as
NIfTI on the input's grid."""

from __future__ import annotations

import gzip
import io
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kdsam.infer.volume import segment_stack
from kdsam.predictor import KDSamPredictor
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from tests.serve.conftest import decode_png
from tests.serve.phantoms import AFFINE, phantom_hu, write_dicom_phantom, write_nifti_phantom, write_npz_phantom


@pytest.fixture
def client(engine: Engine) -> TestClient:
    return TestClient(create_app(engine))


def open_files(client: TestClient, paths: list[Path], **data: str) -> dict:
    files = [("files", (p.name, p.read_bytes())) for p in paths]
    response = client.post("/v1/volumes", files=files, data=data)
    assert response.status_code == 200, response.text
    return response.json()


def stack_of(client: TestClient, info: dict) -> np.ndarray:
    return np.stack([
        np.asarray(Image.open(io.BytesIO(client.get(f"/v1/volumes/{info['volume_id']}/slices/{z}").content)))
        for z in range(info["depth"])
    ])  # fmt: skip


def test_nifti_box3d_is_the_3d_protocol_and_downloads_on_the_input_grid(client, tiny_model, tmp_path) -> None:
    hu = phantom_hu()
    info = open_files(client, [write_nifti_phantom(tmp_path / "liver case.nii.gz", hu)], window="soft-tissue")
    assert (info["depth"], info["height"], info["width"]) == hu.shape and info["name"] == "liver_case"
    stack = stack_of(client, info)
    assert stack[6, 45, 60] > stack[6, 48, 20] > stack[6, 2, 2]  # ball > tissue > air in the soft-tissue window
    box3d = [48, 32, 3, 75, 56, 8]
    answer = client.post(f"/v1/volumes/{info['volume_id']}/segment", json={"box3d": box3d}).json()
    want = segment_stack(tiny_model, stack, np.array([box3d]))
    assert [s["z"] for s in answer["slices"]] == list(range(3, 9))
    for s in answer["slices"]:
        np.testing.assert_array_equal(decode_png(s["png"]), want[s["z"]] == 1)
    labels = np.zeros(hu.shape, np.uint8)
    labels[5, 40, 70] = 2  # z, y, x
    response = client.post(f"/v1/volumes/{info['volume_id']}/nifti", content=gzip.compress(labels.tobytes()))
    assert response.headers["content-disposition"] == 'attachment; filename="liver_case_mask.nii.gz"'
    (tmp_path / "out.nii.gz").write_bytes(response.content)
    img = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_allclose(img.affine, AFFINE)
    assert np.argwhere(np.asarray(img.dataobj)).tolist() == [[70, 40, 5]]  # i, j, k = x, y, z


def test_clicks_refine_their_slice_by_the_2d_click_path(client, tiny_model, tmp_path) -> None:
    info = open_files(client, write_dicom_phantom(tmp_path / "series", phantom_hu()), name="CT series")
    assert info["depth"] == 12 and info["name"] == "CT_series" and info["window"]["method"] == "window"
    stack = stack_of(client, info)
    body = {"z": 7, "points": [[60, 45], [20, 48]], "point_labels": [1, 0], "box": [40, 30, 80, 60]}
    answer = client.post(f"/v1/volumes/{info['volume_id']}/segment", json=body).json()
    predictor = KDSamPredictor(tiny_model)
    predictor.set_image(np.repeat(stack[7][..., None], 3, axis=2))
    masks, _, _ = predictor.predict(
        np.array(body["points"], np.float32),
        np.array([1, 0]),
        np.array(body["box"], np.float32),
        multimask_output=False,
    )
    assert [s["z"] for s in answer["slices"]] == [7]
    np.testing.assert_array_equal(decode_png(answer["slices"][0]["png"]), masks[0])


def test_npz_opens_and_slices_are_embedded_in_the_background(client, tmp_path) -> None:
    info = open_files(client, [write_npz_phantom(tmp_path / "3DBox_CT_0001.npz", phantom_hu(64, 6))])
    assert (info["depth"], info["width"], info["name"]) == (6, 64, "3DBox_CT_0001")
    deadline = time.monotonic() + 60
    while client.get(f"/v1/volumes/{info['volume_id']}").json()["embedded"] < 6:
        assert time.monotonic() < deadline, "the background embedding did not finish"
        time.sleep(0.05)


@pytest.mark.parametrize(
    ("request_", "status", "message"),
    [
        ("mixed", 400, "one NIfTI"),
        ("outside", 400, "z range 3..40 is not inside 0..11"),
        ("clicks without z", 400, "z: clicks need the slice"),
        ("not gzip", 400, "labels: not gzip"),
        ("short labels", 400, "a 96x96x12 label map is 110592"),
        ("unknown", 404, "unknown volume"),
    ],
)
def test_bad_volume_requests_are_one_line(client, tmp_path, request_: str, status: int, message: str) -> None:
    nifti = write_nifti_phantom(tmp_path / "ct.nii.gz", phantom_hu())
    if request_ == "mixed":
        png = tmp_path / "photo.png"
        Image.new("RGB", (8, 8)).save(png)
        response = client.post("/v1/volumes", files=[("files", (p.name, p.read_bytes())) for p in (nifti, png)])
    else:
        vid = "nope" if request_ == "unknown" else open_files(client, [nifti])["volume_id"]
        url = f"/v1/volumes/{vid}"
        response = {
            "outside": lambda: client.post(f"{url}/segment", json={"box3d": [1, 1, 3, 20, 20, 40]}),
            "clicks without z": lambda: client.post(f"{url}/segment", json={"points": [[3, 3]]}),
            "not gzip": lambda: client.post(f"{url}/nifti", content=b"plain"),
            "short labels": lambda: client.post(f"{url}/nifti", content=gzip.compress(b"\0" * 10)),
            "unknown": lambda: client.get(url),
        }[request_]()
    assert response.status_code == status and message in response.json()["error"], response.text


def test_a_series_over_the_apps_upload_limit_is_refused_in_one_line(engine: Engine, tmp_path: Path) -> None:
    paths = write_dicom_phantom(tmp_path / "series", phantom_hu(64, 6))
    size = sum(p.stat().st_size for p in paths)
    client = TestClient(create_app(engine, max_upload_bytes=size - 1))
    response = client.post("/v1/volumes", files=[("files", (p.name, p.read_bytes())) for p in paths])
    assert response.status_code == 413 and "the files together are over" in response.json()["error"]
    roomy = TestClient(create_app(engine, max_upload_bytes=size))
    assert open_files(roomy, paths)["depth"] == 6


def test_an_unreadable_nifti_is_named_as_uploaded(client: TestClient) -> None:
    response = client.post("/v1/volumes", files=[("files", ("scan 7.nii.gz", b"not gzip at all"))])
    error = response.json()["error"]
    assert response.status_code == 400 and error.startswith("scan_7/scan 7.nii.gz: "), error
    assert "/tmp" not in error and "kdsam-volume" not in error
