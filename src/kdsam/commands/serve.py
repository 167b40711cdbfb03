"""`kdsam serve`: the segmentation API and the interactive web page, on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import contextlib

from kdsam.commands.options import add_device_argument
from kdsam.errors import KdsamError
from kdsam.infer.dicomweb import Target, is_target, parse_target
from kdsam.serve.inputs import MAX_PIXELS, MAX_PROMPTS, MAX_UPLOAD_BYTES
from kdsam.serve.server import IDLE_TIMEOUT_S


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="run folder, model.pt, teacher:NAME[=CHECKPOINT], or an ONNX export folder"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: only this machine)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (0: any free port, printed)")
    p.add_argument(
        "--runtime",
        default=None,
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        help="for an ONNX export folder: onnxruntime (fp32, default) or onnxruntime-int8",
    )
    add_device_argument(p)
    p.add_argument(
        "--dicomweb",
        metavar="URL",
        help="a PACS's DICOMweb root (e.g. http://localhost:8042/dicom-web): /v1/pacs lists its studies, opens a "
        "series and stores SEGs there; credentials from KDSAM_DICOMWEB_USER/PASSWORD or _TOKEN (docs/pacs.md)",
    )
    p.add_argument("--max-sessions", type=int, default=16, help="image embeddings kept for interactive sessions")
    limits = p.add_argument_group("limits per request and connection")
    limits.add_argument("--max-prompts", type=int, default=MAX_PROMPTS, help="boxes, or clicks, in one request")
    limits.add_argument("--max-pixels", type=int, default=MAX_PIXELS, help="decoded size of an upload, all dimensions")
    limits.add_argument("--max-upload-mb", type=float, default=MAX_UPLOAD_BYTES / 2**20, help="size of an upload")
    limits.add_argument(
        "--idle-timeout",
        type=float,
        default=IDLE_TIMEOUT_S,
        metavar="S",
        help="drop a connection whose client sends nothing for S seconds while the server waits on it",
    )
    p.add_argument(
        "--session-minutes", type=float, default=30.0, help="a session unused this long is forgotten (closed tabs)"
    )


def _positive(args: argparse.Namespace) -> None:
    for option in ("max_prompts", "max_pixels", "max_upload_mb", "idle_timeout"):
        if not getattr(args, option) > 0:
            raise KdsamError(f"--{option.replace('_', '-')} {getattr(args, option)}: give a positive number")


def _pacs(url: str | None) -> Target | None:
    """--dicomweb as a service root (a study or series in it is refused: the page browses them)."""
    if url is None:
        return None
    target = parse_target(url if is_target(url) else f"dicomweb:{url}")
    if target.study:
        raise KdsamError(f"--dicomweb {url}: give the DICOMweb service root, without /studies/...")
    return target


def run(args: argparse.Namespace) -> int:
    from kdsam.models.loading import load_predictor
    from kdsam.serve.app import create_app
    from kdsam.serve.engine import Engine
    from kdsam.serve.model_info import trained_prompts
    from kdsam.serve.server import bind, uvicorn_server

    _positive(args)
    pacs = _pacs(args.dicomweb)
    with bind(args.host, args.port) as sock:  # a bad or busy port: one line, before the model loads
        predictor = load_predictor(args.model, args.device, args.runtime)
        prompts = trained_prompts(args.model)
        engine = Engine(predictor, args.max_sessions, args.session_minutes * 60, prompts)
        limits = {"max_upload_bytes": int(args.max_upload_mb * 2**20), "max_pixels": args.max_pixels}
        app = create_app(engine, max_prompts=args.max_prompts, dicomweb=pacs, **limits)
        host = f"[{args.host}]" if ":" in args.host else args.host
        url = f"http://{host}:{sock.getsockname()[1]}/"
        print(f"kdsam serve: {engine.name} at {url} (API docs at /docs; Ctrl-C stops)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            warning = "reachable from other machines; there is no authentication"
            print(f"kdsam serve: warning: bound to {args.host}, {warning}")
        # uvicorn finishes the requests in flight on Ctrl-C, then re-raises the signal it caught
        with contextlib.suppress(KeyboardInterrupt):
            uvicorn_server(app, args.idle_timeout).run(sockets=[sock])
    print("kdsam serve: stopped", flush=True)
    return 0
