"""A bounded load test of `kdsam serve` on loopback: N concurrent clients, a fixed number of requests.

    python -m kdsam.serve.loadtest --model teacher:litemedsam --clients 8 --requests 64 --out loadtest.json

starts the server in this process on a free 127.0.0.1 port, sends the requests, stops the server and
writes p50/p95 latency, throughput and errors for two workloads: POST /v1/segment (encoder and
decoder every request) and session prompts (decoder only, against one embedded image). It never
talks to another machine and stops by itself (a request count and an overall deadline).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import torch
from PIL import Image

from kdsam.errors import KdsamError
from kdsam.serve.server import bind, uvicorn_server

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/form-data body and its content type (what a browser form or curl -F sends)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode() for k, v in fields.items()
    ]
    for key, (name, data) in files.items():
        head = f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"; filename="{name}"\r\n'
        parts.append(head.encode() + b"Content-Type: application/octet-stream\r\n\r\n" + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, body: bytes, content_type: str, timeout: float) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def hammer(send: Callable[[], int], clients: int, requests: int, deadline_s: float) -> dict[str, Any]:
    """`requests` calls of `send` from `clients` threads at once; latency percentiles and errors."""
    stop = time.monotonic() + deadline_s
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def one(_: int) -> None:
        if time.monotonic() > stop:
            with lock:
                errors.append("not sent: past the deadline")
            return
        start = time.perf_counter()
        try:
            status = send()
            problem = None if status == 200 else f"HTTP {status}"
        except (OSError, ValueError) as err:  # refused, reset, timed out, bad JSON
            problem = f"{type(err).__name__}: {err}"
        elapsed = (time.perf_counter() - start) * 1000
        with lock:
            if problem:
                errors.append(problem)
            else:
                latencies.append(elapsed)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(requests)))
    wall = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "ok": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors)),
        "latency_ms_p50": round(percentile(latencies, 50), 1) if latencies else None,
        "latency_ms_p95": round(percentile(latencies, 95), 1) if latencies else None,
        "latency_ms_max": round(max(latencies), 1) if latencies else None,
        "latency_ms_mean": round(statistics.fmean(latencies), 1) if latencies else None,
        "requests_per_s": round(len(latencies) / wall, 2),
        "wall_s": round(wall, 2),
    }


def run_load_test(
    base_url: str, image: bytes, boxes: list[list[float]], clients: int = 8, requests: int = 64, deadline_s: float = 300
) -> dict[str, Any]:
    """Both workloads against a running server at `base_url` (loopback only)."""
    if urlsplit(base_url).hostname not in LOOPBACK:
        raise KdsamError(f"{base_url}: the load test only targets this machine (127.0.0.1, localhost, ::1)")
    timeout = max(deadline_s, 1.0)
    body, kind = multipart({"boxes": json.dumps(boxes)}, {"image": ("image.png", image)})
    stateless = hammer(lambda: post(f"{base_url}/v1/segment", body, kind, timeout)[0], clients, requests, deadline_s)
    opened, session = post(f"{base_url}/v1/sessions", *multipart({}, {"image": ("image.png", image)}), timeout)
    if opened != 200:
        raise KdsamError(f"{base_url}/v1/sessions answered {opened}: {session.get('error')}")
    prompt = json.dumps({"boxes": boxes}).encode()
    url = f"{base_url}/v1/sessions/{session['session_id']}/segment"
    prompts = hammer(lambda: post(url, prompt, "application/json", timeout)[0], clients, requests, deadline_s)
    return {"segment": stateless, "session_prompt": prompts}


@contextmanager
def serving(app: Any, **options: Any) -> Iterator[str]:
    """`app` under uvicorn on a free 127.0.0.1 port in a thread, as `kdsam serve` runs it; yields its
    URL, stops it after. `options` go to `uvicorn_server` (idle_timeout_s)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn_server(app, **options)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    if not server.started:
        raise KdsamError(f"the server did not start on 127.0.0.1:{port}")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


def main(argv: list[str] | None = None) -> int:
    from kdsam.bench.latency import device_name
    from kdsam.data.synthetic import synthesize
    from kdsam.models.loading import load_predictor
    from kdsam.models.spec import as_spec
    from kdsam.serve.app import create_app
    from kdsam.serve.engine import Engine
    from kdsam.utils.atomic import write_json

    p = argparse.ArgumentParser(prog="python -m kdsam.serve.loadtest", description=__doc__.split("\n")[0])
    p.add_argument("--model", default="teacher:litemedsam")
    p.add_argument("--runtime", default=None)
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--requests", type=int, default=64, help="per workload")
    p.add_argument("--deadline-s", type=float, default=300.0, help="stop sending after this long, per workload")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args(argv)
    image, _ = synthesize("polyp", 7)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    h, w = image.shape[:2]
    boxes = [[w * 0.25, h * 0.25, w * 0.75, h * 0.75]]
    engine = Engine(load_predictor(args.model, "cpu", args.runtime))
    load_before = os.getloadavg()
    with serving(create_app(engine)) as url:
        result = run_load_test(url, buffer.getvalue(), boxes, args.clients, args.requests, args.deadline_s)
    report = {
        "model": engine.name,
        "runtime": args.runtime or ("onnxruntime" if as_spec(args.model).kind == "onnx" else "torch"),
        "cpu": device_name(torch.device("cpu")),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(v, 2) for v in load_before],
        "load_average_after": [round(v, 2) for v in os.getloadavg()],
        "image": f"{w}x{h} PNG, one box",
        "concurrency": "requests queue on one lock around the model (one model call at a time)",
        **result,
    }
    write_json(args.out, report)
    print(json.dumps(report, indent=2))
    return 0 if result["segment"]["errors"] == 0 and result["session_prompt"]["errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
