"""`kdsam serve`: the segmentation API and the interactive web page, on loopback unless told otherwise."""

from __future__ import annotations

import argparse
import contextlib

from kdsam.commands.options import add_device_argument


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--model", required=True, help="run folder, model.pt, teacher:NAME[=CHECKPOINT], or an ONNX export folder"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback: only this machine)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--runtime",
        default=None,
        choices=["torch", "onnxruntime", "onnxruntime-int8"],
        help="for an ONNX export folder: onnxruntime (fp32, default) or onnxruntime-int8",
    )
    add_device_argument(p)
    p.add_argument("--max-sessions", type=int, default=16, help="image embeddings kept for interactive sessions")
    p.add_argument(
        "--session-minutes", type=float, default=30.0, help="a session unused this long is forgotten (closed tabs)"
    )


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from kdsam.models.loading import load_predictor
    from kdsam.serve.app import create_app
    from kdsam.serve.engine import Engine

    engine = Engine(load_predictor(args.model, args.device, args.runtime), args.max_sessions, args.session_minutes * 60)
    app = create_app(engine)
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"kdsam serve: {engine.name} at http://{host}:{args.port}/ (API docs at /docs; Ctrl-C stops)", flush=True)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"kdsam serve: warning: bound to {args.host}, reachable from other machines; there is no authentication")
    # uvicorn finishes the requests in flight on Ctrl-C, then re-raises the signal it caught
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uvicorn.Config(app, host=args.host, port=args.port, log_level="warning")).run()
    print("kdsam serve: stopped", flush=True)
    return 0
