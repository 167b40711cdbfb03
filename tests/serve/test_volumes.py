"""Volume sessions over HTTP: NIfTI, DICOM series and 3D npz open as volumes; a 3D box answers as
`kdsam.infer.volume.segment_stack`, clicks as `kdsam.infer.interactive3d.ClassVolume` on the same
slices; the label map comes back as NIfTI on the input's grid."""

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

from kdsam.infer.cvpr25 import Box3D, ClassPrompts
from kdsam.infer.interactive3d import ClassVolume
from kdsam.infer.volume import SliceEmbeddings, TorchSlices, segment_box3d, segment_stack, slice_model
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


def test_a_click_refines_the_volume_as_classvolume_does(client, tiny_model, tmp_path) -> None:
    info = open_files(client, write_dicom_phantom(tmp_path / "series", phantom_hu()), name="CT series")
    assert info["depth"] == 12 and info["name"] == "CT_series" and info["window"]["method"] == "window"
    stack = stack_of(client, info)
    url = f"/v1/volumes/{info['volume_id']}/segment"
    box3d = [40, 30, 3, 80, 60, 9]
    boxed = {s["z"]: decode_png(s["png"]) for s in client.post(url, json={"box3d": box3d}).json()["slices"]}
    body = {"box3d": box3d, "points": [[50, 40, 4]], "point_labels": [0]}  # a background click on slice 4
    answer = client.post(url, json=body).json()
    got = {s["z"]: decode_png(s["png"]) for s in answer["slices"]}
    # the same rule called directly on the same slices: the box from its middle slice, then slice 4 corrected
    embeddings = SliceEmbeddings(slice_model(tiny_model), stack)
    prompts = ClassPrompts(Box3D(3, 9, 6, (40, 30, 80, 60)), [((4, 40, 50), False)], 1)
    volume = ClassVolume(embeddings, prompts, 1, segment_box3d(embeddings.model, embeddings, box3d))
    volume.correct(4)
    volume.clear_outside()
    assert sorted(got) == list(range(3, 10))
    for z in range(12):
        np.testing.assert_array_equal(got.get(z, np.zeros_like(volume.mask[z])), volume.mask[z], err_msg=f"slice {z}")
    changed = [z for z in got if (got[z] != boxed[z]).any()]
    assert 4 in changed and len(changed) > 1, f"the click changed slices {changed} only"
    assert not got[4][40, 50], "the background click is inside the corrected slice's mask"


def test_a_new_click_decodes_only_what_it_changed(client, tmp_path, monkeypatch) -> None:
    info = open_files(client, [write_npz_phantom(tmp_path / "case.npz", phantom_hu(64, 8))])
    deadline = time.monotonic() + 60
    while client.get(f"/v1/volumes/{info['volume_id']}").json()["embedded"] < 8:  # each slice's embedding final
        assert time.monotonic() < deadline, "the background embedding did not finish"
        time.sleep(0.05)
    calls: list[str] = []
    for name in ("decode_box", "decode_prompts"):
        real = getattr(TorchSlices, name)
        monkeypatch.setattr(
            TorchSlices, name, lambda self, *a, real=real, name=name: calls.append(name) or real(self, *a)
        )
    url = f"/v1/volumes/{info['volume_id']}/segment"
    one = {"box3d": [20, 14, 1, 56, 44, 6], "points": [[40, 28, 2]], "point_labels": [1]}
    two = {**one, "points": [[40, 28, 2], [30, 30, 5]], "point_labels": [1, 0]}
    first = client.post(url, json=one).json()
    assert "decode_box" in calls and "decode_prompts" in calls
    calls.clear()
    assert client.post(url, json=one).json()["slices"] == first["slices"] and calls == []  # nothing decoded again
    second = client.post(url, json=two).json()
    assert "decode_box" not in calls and "decode_prompts" in calls, calls  # the box's slices are remembered
    assert second["slices"] != first["slices"]


def test_clicks_alone_and_the_prompt_limit(engine: Engine, tmp_path: Path) -> None:
    client = TestClient(create_app(engine, max_prompts=2))
    info = open_files(client, [write_npz_phantom(tmp_path / "case.npz", phantom_hu(64, 6))])
    url = f"/v1/volumes/{info['volume_id']}/segment"
    answer = client.post(url, json={"points": [[40, 28, 2]]}).json()  # an object click, no box
    assert answer["slices"] and all(decode_png(s["png"]).any() for s in answer["slices"]), answer
    response = client.post(url, json={"points": [[40, 28, 2], [30, 30, 2], [20, 20, 3]]})
    assert response.status_code == 400 and "over the limit of 2 per request (--max-prompts)" in response.text


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
        ("clicks without z", 400, "points: each entry must be 3 finite numbers"),
        ("click off the slices", 400, "a click's z is not a slice index 0..11"),
        ("nothing", 400, "give box3d, or points"),
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
            "click off the slices": lambda: client.post(f"{url}/segment", json={"points": [[3, 3, 12]]}),
            "nothing": lambda: client.post(f"{url}/segment", json={}),
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


def test_slices_over_max_pixels_are_refused_in_one_line(engine: Engine, tmp_path: Path) -> None:
    nifti = write_nifti_phantom(tmp_path / "ct.nii.gz", phantom_hu(64, 6))
    files = [("files", (nifti.name, nifti.read_bytes()))]
    response = TestClient(create_app(engine, max_pixels=64 * 64 - 1)).post("/v1/volumes", files=files)
    assert response.status_code == 413, response.text
    assert response.json()["error"] == "ct: slices of 64x64 pixels are over the 4095 pixel limit (--max-pixels)"
    assert TestClient(create_app(engine, max_pixels=64 * 64)).post("/v1/volumes", files=files).status_code == 200


def test_an_unreadable_nifti_is_named_as_uploaded(client: TestClient) -> None:
    response = client.post("/v1/volumes", files=[("files", ("scan 7.nii.gz", b"not gzip at all"))])
    error = response.json()["error"]
    assert response.status_code == 400 and error.startswith("scan_7/scan 7.nii.gz: "), error
    assert "/tmp" not in error and "kdsam-volume" not in error


def test_an_mhd_upload_with_its_raw_opens_as_its_nifti_does(tmp_path: Path) -> None:
    import SimpleITK as sitk

    from kdsam.errors import BadFileError
    from kdsam.serve.volumes import read_upload

    nifti = write_nifti_phantom(tmp_path / "ct.nii.gz", phantom_hu(32, 4))
    folder = tmp_path / "upload"
    folder.mkdir()
    sitk.WriteImage(sitk.ReadImage(str(nifti)), str(folder / "ct.mhd"))
    volume, stack, _ = read_upload(folder, [folder / "ct.mhd", folder / "ct.raw"], "soft-tissue")
    reference, expected, _ = read_upload(tmp_path, [nifti], "soft-tissue")
    np.testing.assert_array_equal(stack, expected)
    np.testing.assert_allclose(volume.affine, reference.affine, atol=1e-4)
    (folder / "ct.raw").unlink()
    with pytest.raises(BadFileError, match=r"ct\.mhd: its data file ct\.raw is missing"):
        read_upload(folder, [folder / "ct.mhd"], "soft-tissue")
