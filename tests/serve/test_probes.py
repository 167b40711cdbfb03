"""Hostile probes of `kdsam serve`, one row per probe (issue 22): the request, the status it must get.

Three tables. HTTP_PROBES go through FastAPI's TestClient. SOCKET_PROBES need a real socket: they
talk raw HTTP/1.1 to uvicorn on a free loopback port (status 0: the server closed the connection
without answering, which is what a stalled client must get). CLI_PROBES run `kdsam serve` with the
server itself stubbed out. Add a row whenever a new way to break the server is found.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest
from fastapi.testclient import TestClient

from kdsam.predictor import KDSamPredictor
from kdsam.serve.app import create_app
from kdsam.serve.engine import Engine
from tests import hostile
from tests.serve.conftest import decode_png, png_bytes

MAX_UPLOAD = 2_000_000
MAX_PIXELS = 4_000_000
MAX_PROMPTS = 4  # kdsam serve's default is 64; 4 keeps the probes fast
IDLE_S = 1.0
BOX = [10, 10, 90, 80]
FORM = "multipart/form-data; boundary=x"
Reply = tuple[int, str]


@dataclass
class Target:
    """What a probe can reach: the app in process, the same app on a loopback socket, a folder."""

    client: TestClient
    address: tuple[str, int]
    folder: Path
    png: bytes
    engine: Engine
    _sid: str = ""

    @property
    def sid(self) -> str:
        """A session on the test image, opened on first use."""
        if not self._sid:
            self._sid = self.client.post("/v1/sessions", files={"image": ("a.png", self.png)}).json()["session_id"]
        return self._sid


@dataclass(frozen=True)
class Probe:
    name: str
    send: Callable[[Target], Reply]
    status: int
    words: str = ""

    def __str__(self) -> str:
        return self.name


# ---- how the HTTP probes are sent ----------------------------------------------------------------------

Bytes = bytes | Callable[[Target], bytes]


def _bytes(data: Bytes, t: Target) -> bytes:
    return data(t) if callable(data) else data


def _png(t: Target) -> bytes:
    return t.png


def upload(path: str = "/v1/segment", name: str = "f.png", data: Bytes | None = _png, **fields: str) -> Callable:
    """A multipart upload (no image field when `data` is None); /v1/segment gets one valid box
    unless `boxes` is given."""
    if path == "/v1/segment":
        fields.setdefault("boxes", json.dumps([BOX]))

    def send(t: Target) -> Reply:
        files = None if data is None else {"image": (name, _bytes(data, t))}
        reply = t.client.post(path, files=files, data=fields)
        return reply.status_code, reply.text

    return send


def prompt(body: Any = None, content: bytes | None = None) -> Callable:
    """A JSON body for the session's segment endpoint: `body` as JSON, or `content` as it is."""

    def send(t: Target) -> Reply:
        url = f"/v1/sessions/{t.sid}/segment"
        if content is None:
            reply = t.client.post(url, json=body)
        else:
            reply = t.client.post(url, content=content, headers={"content-type": "application/json"})
        return reply.status_code, reply.text

    return send


def get(path: str) -> Callable:
    def send(t: Target) -> Reply:
        reply = t.client.get(path)
        return reply.status_code, reply.text

    return send


def dicom(kind: str) -> Bytes:
    return lambda t: hostile.bad_dicom(t.folder, kind).read_bytes()


def dicom_frames(frames: int) -> Bytes:
    """pydicom's 128x128 CT slice whose header claims `frames` frames (the pixels are one frame's)."""

    def build(t: Target) -> bytes:
        return hostile._dicom(t.folder, "frames.dcm", hostile._set(NumberOfFrames=frames)).read_bytes()

    return build


def nifti_header(shape: tuple[int, ...]) -> Callable:
    """The upload of a NIfTI header claiming `shape`, with no data behind it."""
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.int16), np.eye(4)).header
    header.set_data_shape(shape)
    return upload("/v1/sessions", "a.nii", header.binaryblock + bytes(4))


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


HTTP_PROBES = [
    # 1. bounded requests: prompts per request, JSON and file names that broke the parser
    Probe("5 boxes on /v1/segment (limit 4)", upload(boxes=json.dumps([BOX] * 5)), 400, "limit of 4 per request"),
    Probe("4 boxes on /v1/segment (limit 4)", upload(boxes=json.dumps([BOX] * 4)), 200),
    Probe("5 boxes in a session (limit 4)", prompt({"boxes": [BOX] * 5}), 400, "limit of 4 per request"),
    Probe("5 clicks in a session (limit 4)", prompt({"points": [[20, 20]] * 5}), 400, "limit of 4 per request"),
    Probe("10000 boxes on /v1/segment", upload(boxes=json.dumps([BOX] * 10_000)), 400, "10000 given"),
    Probe("boxes JSON nested 100k deep (form)", upload(boxes=nested(100_000)), 400, "nested too deeply"),
    Probe("prompt JSON nested 100k deep (body)", prompt(content=nested(100_000).encode()), 400),
    Probe("a 5000-digit box coordinate", upload(boxes=f"[[1, 1, 5, {'9' * 5000}]]"), 400, "boxes"),
    Probe("a box coordinate of 10**400", upload(boxes=f"[[1, 1, 5, 1{'0' * 400}]]"), 400, "finite"),
    Probe("a prompt body over 1 MiB", prompt(content=b"[" + b"0," * 600_000 + b"0]"), 413, "limit"),
    Probe("a 300-character upload suffix (read by content)", upload(name="scan." + "x" * 300), 200),
    Probe("a NUL byte in the upload's name", upload(name="sc\0an.png"), 200),
    Probe("an upload over the byte limit", upload(data=b"x" * (MAX_UPLOAD + 1)), 413, "upload limit"),
    # 4. non-finite windows
    Probe("window 0,inf", upload("/v1/sessions", window="0,inf"), 400, "window '0,inf': expected finite"),
    Probe("window nan,400", upload("/v1/sessions", window="nan,400"), 400, "window 'nan,400': expected finite"),
    # 5. malformed medical files: one line, 4xx
    *(
        Probe(f"DICOM {kind}", upload("/v1/sessions", "ct.dcm", dicom(kind)), 400, words)
        for kind, (_, words) in hostile.BAD_DICOMS.items()
    ),
    Probe(
        "corrupt gzip NIfTI",
        upload("/v1/sessions", "ct.nii.gz", lambda t: hostile.corrupt_gzip_nifti(t.folder).read_bytes()),
        400,
        "ct.nii.gz",
    ),
    Probe("NIfTI header of 30000^3", nifti_header((30000,) * 3), 413, "pixel limit"),
    Probe("NIfTI header 1000x1000x8: the 3rd dimension counts", nifti_header((1000, 1000, 8)), 413, "pixel limit"),
    Probe("NIfTI header 100x100x1x1000: the 4th counts", nifti_header((100, 100, 1, 1000)), 413, "pixel limit"),
    Probe("DICOM claiming 1000 frames", upload("/v1/sessions", "ct.dcm", dicom_frames(1000)), 413, "pixel limit"),
    # keep: 4xx on every prompt error
    Probe("inverted box", upload(boxes="[[50, 50, 10, 10]]"), 400, "X0 must be less than X1"),
    Probe("box outside the image", upload(boxes="[[0, 0, 5000, 50]]"), 400, "outside"),
    Probe("NaN box (JSON NaN)", upload(boxes="[[NaN, 1, 5, 5]]"), 400, "finite"),
    Probe("box of strings", upload(boxes='[["1", "1", "5", "5"]]'), 400, "finite"),
    Probe("box of booleans", upload(boxes="[[true, 1, 5, 5]]"), 400, "finite"),
    Probe("three-number box", upload(boxes="[[1, 1, 5]]"), 400, "4 finite"),
    Probe("boxes not JSON", upload(boxes="[[1, 1, 5, 5"), 400, "not JSON"),
    Probe("boxes an object", upload(boxes='{"x": 1}'), 400, "JSON list"),
    Probe("no boxes", upload(boxes="[]"), 400, "at least one"),
    Probe("no image", upload(data=None), 400, "no image"),
    Probe("empty image", upload(data=b""), 400, "empty"),
    Probe("not an image", upload(data=b"%PDF-1.4"), 400, "unreadable"),
    Probe("session prompt: nothing", prompt({}), 400, "give boxes"),
    Probe("session prompt: click outside", prompt({"points": [[5000, 5]]}), 400, "outside"),
    Probe("session prompt: click of NaN", prompt(content=b'{"points": [[NaN, 5]]}'), 400, "finite"),
    Probe("session prompt: labels miscounted", prompt({"points": [[5, 5]], "point_labels": [1, 1]}), 400, "label"),
    Probe("session prompt: label 2", prompt({"points": [[5, 5]], "point_labels": [2]}), 400, "label"),
    Probe("session prompt: clicks with two boxes", prompt({"points": [[5, 5]], "boxes": [BOX, BOX]}), 400, "one box"),
    Probe("session prompt: points a string", prompt({"points": "nope"}), 422, "points"),
    Probe("session prompt: not JSON", prompt(content=b"{oops"), 422),
    Probe("unknown session", get("/v1/sessions/nope/image"), 404, "unknown session"),
    # keep: no path traversal
    Probe("static ../ traversal", get("/static/../../../../etc/passwd"), 404),
    Probe("static %2e%2e traversal", get("/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd"), 404),
    Probe("static %2f traversal", get("/static/..%2f..%2f..%2fetc%2fpasswd"), 404),
    Probe("session id ../", get("/v1/sessions/..%2f..%2fetc/image"), 404),
    Probe("upload named ../../x.png", upload(name="../../../../tmp/kdsam-probe.png"), 200),
]


# ---- how the socket probes are sent ------------------------------------------------------------------


def _status(sock: socket.socket, timeout: float = 10) -> int:
    """The status code of the next response on `sock`, 0 when the server closes it without one."""
    sock.settimeout(timeout)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                return 0
            data += chunk
    except ConnectionResetError:
        return 0
    return int(data.split()[1])


def _responses(sock: socket.socket, count: int) -> list[int]:
    """Statuses of `count` responses on one keep-alive connection (0 once it is closed)."""
    sock.settimeout(10)
    buffer, statuses = b"", []
    while len(statuses) < count:
        head, sep, rest = buffer.partition(b"\r\n\r\n")
        if sep:
            lines = head.lower().split(b"\r\n")
            length = next((int(line.split(b":")[1]) for line in lines if line.startswith(b"content-length")), 0)
            if len(rest) >= length:
                statuses.append(int(head.split()[1]))
                buffer = rest[length:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            return statuses + [0] * (count - len(statuses))
        buffer += chunk
    return statuses


def _request(
    method: str, path: str, body: bytes = b"", content_type: str = "application/json", length: int | None = None
) -> bytes:
    """One HTTP/1.1 request; `length` declares a Content-Length other than the body's."""
    head = f"{method} {path} HTTP/1.1\r\nHost: probe\r\nContent-Type: {content_type}\r\n"
    return (head + f"Content-Length: {len(body) if length is None else length}\r\n\r\n").encode() + body


def _connect(t: Target) -> socket.socket:
    return socket.create_connection(t.address, timeout=10)


def exchange(data: bytes) -> Callable:
    """Send `data`, read one response's status."""

    def send(t: Target) -> Reply:
        with _connect(t) as sock:
            sock.sendall(data)
            return _status(sock), ""

    return send


def stall(first: bytes, then: bytes = b"", every_s: float = 0.0, within_s: float = 3 * IDLE_S + 0.5) -> Callable:
    """Send `first`, then trickle `then` a byte every `every_s` seconds, then nothing: the server must
    close the connection within `within_s` of its opening. The status of its answer, 0 for none."""

    def send(t: Target) -> Reply:
        deadline = time.monotonic() + within_s
        with _connect(t) as sock:
            sock.sendall(first)
            for byte in then:
                time.sleep(every_s)
                try:
                    sock.sendall(bytes([byte]))
                except OSError:
                    break
            received = b""
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                while chunk := sock.recv(4096):
                    received += chunk
            except ConnectionResetError:
                pass
            except TimeoutError:
                return -1, f"still open after {within_s} s"
        return (int(received.split()[1]) if received else 0), ""

    return send


def chunked_flood(total: int = 40 * MAX_UPLOAD) -> Callable:
    """A multipart upload sent chunked (no Content-Length), `total` bytes of it: the 413 must come
    back before the client has sent it all."""

    def send(t: Target) -> Reply:
        boundary = "probe"
        head = (
            "POST /v1/segment HTTP/1.1\r\nHost: probe\r\nTransfer-Encoding: chunked\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n"
        ).encode()
        part = f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="big.png"\r\n\r\n'.encode()
        block = 64 * 1024
        with _connect(t) as sock:
            sock.sendall(head + f"{len(part):x}\r\n".encode() + part + b"\r\n")
            sent = 0
            while sent < total:
                if select.select([sock], [], [], 0)[0]:
                    return _status(sock), f"after {sent} bytes"
                try:
                    sock.sendall(f"{block:x}\r\n".encode() + bytes(block) + b"\r\n")
                except OSError:
                    break
                sent += block
            return (_status(sock), "") if sent < total else (0, "the whole body was read before any answer")

    return send


def errors_then_ok(t: Target) -> Reply:
    """A 400, a 404, a 422 and a 405 on one keep-alive connection, then a 200 on the same one."""
    requests = [
        _request("POST", f"/v1/sessions/{t.sid}/segment", b'{"boxes": [[50, 50, 10, 10]]}'),
        _request("POST", "/v1/sessions/nope/segment", b'{"boxes": [[1, 1, 5, 5]]}'),
        _request("POST", f"/v1/sessions/{t.sid}/segment", b"{oops"),
        _request("DELETE", "/healthz"),
        _request("GET", "/healthz"),
    ]
    with _connect(t) as sock:
        sock.sendall(b"".join(requests))
        statuses = _responses(sock, len(requests))
    return (statuses[-1], str(statuses)) if statuses[:-1] == [400, 404, 422, 405] else (-1, str(statuses))


SOCKET_PROBES = [
    Probe("413 before a declared 10 GB body is read", exchange(_request("POST", "/v1/segment", length=10**10)), 413),
    Probe("chunked upload over the limit: 413 before it is all read", chunked_flood(), 413),
    Probe("400, 404, 422, 405 then 200 on one connection", errors_then_ok, 200),
    Probe("a connection that never sends a request is dropped", stall(b""), 0),
    Probe("request headers never finished are dropped", stall(b"GET /healthz HTTP/1.1\r\n"), 0),
    Probe("headers a byte at a time do not keep it open", stall(b"GET / HTTP/1.1\r\n", b"X-Slow: a\r\n", 0.3, 2.5), 0),
    Probe("a body that stops half way is dropped", stall(_request("POST", "/v1/segment", b"--x\r\n", FORM, 1000)), 0),
    Probe("idle after a response: dropped", stall(_request("GET", "/healthz")), 200),
]


@pytest.fixture(scope="module")
def target(tiny_model, image, tmp_path_factory) -> Iterator[Target]:
    from kdsam.serve.loadtest import serving

    engine = Engine(KDSamPredictor(tiny_model), max_sessions=256)  # the probes never evict the shared session
    app = create_app(engine, max_upload_bytes=MAX_UPLOAD, max_pixels=MAX_PIXELS, max_prompts=MAX_PROMPTS)
    with serving(app, idle_timeout_s=IDLE_S) as url:
        host, port = url.removeprefix("http://").split(":")
        yield Target(TestClient(app), (host, int(port)), tmp_path_factory.mktemp("probes"), png_bytes(image), engine)


def _check(probe: Probe, target: Target) -> None:
    status, text = probe.send(target)
    assert status == probe.status, f"{probe.name}: got {status} {text[:300]}"
    if 400 <= status < 600:
        error = json.loads(text)["error"]
        assert probe.words in error and "\n" not in error, error


@pytest.mark.parametrize("probe", HTTP_PROBES, ids=str)
def test_http_probe(probe: Probe, target: Target) -> None:
    _check(probe, target)
    assert target.client.get("/healthz").status_code == 200  # and the server still serves


@pytest.mark.parametrize("probe", SOCKET_PROBES, ids=str)
def test_socket_probe(probe: Probe, target: Target) -> None:
    status, text = probe.send(target)
    assert status == probe.status, f"{probe.name}: got {status} {text}"
    with _connect(target) as sock:  # the server still answers on a new connection
        sock.sendall(_request("GET", "/healthz"))
        assert _status(sock) == 200


def test_a_500_keeps_the_connection_usable(target: Target, monkeypatch) -> None:
    """An unexpected exception is a one-line 500 and the keep-alive connection stays open (Starlette's
    own 500 handler re-raised, and uvicorn closed the connection)."""
    monkeypatch.setattr(target.engine, "session", lambda key: 1 / 0)
    with _connect(target) as sock:
        sock.sendall(_request("GET", "/v1/sessions/any/image") + _request("GET", "/healthz"))
        assert _responses(sock, 2) == [500, 200]
    reply = target.client.get("/v1/sessions/any/image")
    assert reply.status_code == 500 and "ZeroDivisionError" in reply.json()["error"]


def test_boxes_are_decoded_in_chunks(tiny_model, image, monkeypatch) -> None:
    """Boxes never reach the predictor all at once: memory is that of one chunk, whatever the count,
    and the masks are those of one call with every box."""
    from kdsam.serve import engine as engine_module

    engine = Engine(KDSamPredictor(tiny_model))
    sizes: list[int] = []
    predict = engine.predictor.predict_boxes
    monkeypatch.setattr(engine.predictor, "predict_boxes", lambda b: sizes.append(len(b)) or predict(b))
    monkeypatch.setattr(engine_module, "DECODE_BYTES", 4 * image.shape[0] * image.shape[1] * 5)  # 5 boxes a chunk
    client = TestClient(create_app(engine))
    boxes = [[10 + i, 10, 90 + i, 80] for i in range(13)]
    sid = client.post("/v1/sessions", files={"image": ("a.png", png_bytes(image))}).json()["session_id"]
    reply = client.post(f"/v1/sessions/{sid}/segment", json={"boxes": boxes})
    assert reply.status_code == 200 and sizes == [5, 5, 3]
    whole, _, _ = predict(np.asarray(boxes, np.float64))
    for got, want in zip(reply.json()["masks"], whole[:, 0], strict=True):
        np.testing.assert_array_equal(decode_png(got["png"]), want)


# ---- kdsam serve's command line ----------------------------------------------------------------------


@dataclass(frozen=True)
class CliProbe:
    name: str
    args: list[str]
    code: int
    words: str

    def __str__(self) -> str:
        return self.name


CLI_PROBES = [
    CliProbe("loopback by default", [], 0, "at http://127.0.0.1:"),
    CliProbe("0.0.0.0 warns", ["--host", "0.0.0.0"], 0, "warning: bound to 0.0.0.0, reachable from other machines"),
    CliProbe("--port 99999", ["--port", "99999"], 2, "a port is 1 to 65535"),
    CliProbe("--port -1", ["--port", "-1"], 2, "a port is 1 to 65535"),
    CliProbe("a port in use", ["--port", "BUSY"], 2, "in use by another program"),
    CliProbe("a host not on this machine", ["--host", "192.0.2.1"], 2, "not an address of this machine"),
    CliProbe("--max-prompts 0", ["--max-prompts", "0"], 2, "--max-prompts 0"),
    CliProbe("--idle-timeout 0", ["--idle-timeout", "0"], 2, "--idle-timeout 0"),
]


@pytest.mark.parametrize("probe", CLI_PROBES, ids=str)
def test_cli_probe(probe: CliProbe, tiny_model, tmp_path, monkeypatch, capsys) -> None:
    from kdsam.cli import main
    from kdsam.models.loading import save_model
    from kdsam.serve import server

    bound = []

    class Stub:  # uvicorn's Server, minus serving
        def run(self, sockets: list[socket.socket]) -> None:
            bound.append(sockets[0].getsockname()[0])

    monkeypatch.setattr(server, "uvicorn_server", lambda app, idle_timeout_s: Stub())
    save_model(tiny_model, tmp_path / "model.pt")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args = [a.replace("BUSY", str(busy.getsockname()[1])) for a in probe.args]
        args = args if "--port" in args else [*args, "--port", "0"]
        code = main(["serve", "--model", str(tmp_path / "model.pt"), *args])
    out, err = capsys.readouterr()
    assert code == probe.code and probe.words in out + err, out + err
    if code == 2:
        assert len(err.strip().splitlines()) == 1 and "http://" not in out  # one line, and no URL announced
    else:
        assert bound == [args[args.index("--host") + 1] if "--host" in args else "127.0.0.1"]
