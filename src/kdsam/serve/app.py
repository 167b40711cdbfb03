"""The HTTP API and the web page, as one FastAPI app over an `Engine`.

Stateless: POST /v1/segment (image + boxes -> masks). Interactive: POST /v1/sessions embeds an
image once; POST /v1/sessions/{id}/segment then decodes boxes and clicks against the stored
embedding (milliseconds, no encoder). Errors are `{"error": "<one line>"}` with a 4xx status.
The handlers are plain functions: FastAPI runs them in its thread pool, and the engine's lock
queues the model calls.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterable
from importlib import resources
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

import kdsam
from kdsam.errors import KdsamError
from kdsam.infer.dicomweb import Target
from kdsam.serve.engine import Engine, Prediction
from kdsam.serve.guard import Guard
from kdsam.serve.inputs import (
    MAX_PIXELS,
    MAX_PROMPTS,
    MAX_UPLOAD_BYTES,
    BadRequest,
    decode_image,
    parse_boxes,
    parse_points,
)
from kdsam.serve.masks import mask_png
from kdsam.serve.volume_routes import volume_router, volume_store

STATIC = resources.files("kdsam.serve") / "static"
FORM_OVERHEAD = 2**20  # multipart boundaries and the boxes field, on top of the file itself
MAX_JSON_BYTES = 2**20  # a JSON body (prompts): 64 boxes take 2 KB

# the form fields both image-taking endpoints share
ImageFile = Annotated[UploadFile | None, File(description="any image file kdsam reads")]
WindowForm = Annotated[
    str | None, Form(description="intensity window: auto, soft-tissue, lung, bone, brain, percentile, L,W")
]


class MaskOut(BaseModel):
    box: list[float] | None = Field(description="the box prompt [x0, y0, x1, y1], or null for a click prompt")
    score: float = Field(description="the decoder's predicted IoU")
    png: str = Field(description="base64 PNG of the HxW mask, 0 background, 255 object")


class SegmentOut(BaseModel):
    width: int
    height: int
    masks: list[MaskOut]
    decode_ms: float


class SessionOut(BaseModel):
    session_id: str
    width: int
    height: int
    encode_ms: float


class Prompt(BaseModel):
    """Prompts for a session: boxes alone (one mask per box), or clicks with at most one box (one mask)."""

    boxes: list[list[float]] = Field(default=[], description="[[x0, y0, x1, y1], ...] in image pixels")
    points: list[list[float]] = Field(default=[], description="[[x, y], ...] clicks in image pixels")
    point_labels: list[int] | None = Field(default=None, description="1 object, 0 background; default all 1")
    use_previous_mask: bool = Field(default=False, description="refine the session's last single mask")


def _masks(predictions: Iterable[Prediction], boxes: list[list[float]] | None) -> list[dict[str, Any]]:
    """Each chunk's masks as PNG before the next chunk is decoded, so full-size masks never pile up."""
    out: list[dict[str, Any]] = []
    for prediction in predictions:
        for mask, score in zip(prediction.masks, prediction.scores, strict=True):
            out.append({"box": boxes[len(out)] if boxes else None, "score": float(score), "png": mask_png(mask)})
    return out


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)


def create_app(
    engine: Engine,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_prompts: int = MAX_PROMPTS,
    dicomweb: Target | None = None,
) -> FastAPI:
    """The app serving `engine`'s model: API under /v1, health at /healthz, the page at /. Requests
    are bounded: upload bytes, decoded pixels (every dimension) and boxes or clicks per request.
    With `dicomweb` (a PACS's service root), /v1/pacs lists, opens and stores to that PACS."""
    app = FastAPIOffline(  # /docs and /redoc with their scripts served from the package: no CDN
        title="kdsam",
        version=kdsam.__version__,
        description=f"Box- and click-prompted segmentation with {engine.name}.",
        favicon_url="/favicon.ico",
        static_url="/static-docs",
    )

    @app.exception_handler(BadRequest)
    def bad_request(_request: Request, err: BadRequest) -> JSONResponse:
        return _error(err.status, str(err))

    @app.exception_handler(KdsamError)
    def kdsam_error(_request: Request, err: KdsamError) -> JSONResponse:
        return _error(400, str(err))

    @app.exception_handler(RequestValidationError)
    def invalid(_request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where}: {first.get('msg')}" if where else first.get("msg"))

    @app.exception_handler(HTTPException)
    def http_error(_request: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, err.detail)

    def max_body(content_type: str) -> int:
        return max_upload_bytes + FORM_OVERHEAD if content_type.startswith("multipart/") else MAX_JSON_BYTES

    app.add_middleware(Guard, max_body=max_body)  # body limits while streaming; unexpected errors -> 500

    def _read_upload(image: UploadFile | None, window: str | None = None) -> np.ndarray:
        if image is None:
            raise BadRequest(400, "no image: send the file as multipart form field 'image'")
        data = image.file.read(max_upload_bytes + 1)
        return decode_image(data, image.filename, max_upload_bytes, max_pixels, window or "auto")

    @app.get("/healthz")
    def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": engine.name,
            "sessions": engine.n_sessions,
            "prompts": list(engine.prompts),
            "pacs": dicomweb is not None,  # the page shows its PACS panel (/v1/pacs) only then
        }

    @app.post("/v1/segment", response_model=SegmentOut)
    def segment(
        image: ImageFile = None,
        boxes: Annotated[str | None, Form(description="JSON [[x0, y0, x1, y1], ...] in image pixels")] = None,
        window: WindowForm = None,
    ) -> dict[str, Any]:
        """One image and its box prompts -> one mask per box (the stateless call, for scripts)."""
        pixels = _read_upload(image, window)
        parsed = parse_boxes(boxes, pixels.shape[:2], limit=max_prompts)
        if not len(parsed):
            raise BadRequest(400, "boxes: give at least one [x0, y0, x1, y1] box")
        embedding = engine.embed(pixels)
        start = time.perf_counter()
        masks = _masks(engine.decode_boxes(embedding, parsed), parsed.tolist())
        h, w = pixels.shape[:2]
        ms = (time.perf_counter() - start) * 1000
        return {"width": w, "height": h, "masks": masks, "decode_ms": round(ms, 1)}

    @app.post("/v1/sessions", response_model=SessionOut)
    def open_session(
        image: ImageFile = None,
        window: WindowForm = None,
    ) -> dict[str, Any]:
        """Upload and embed an image once (a volume: its middle slice); prompt it many times."""
        pixels = _read_upload(image, window)
        start = time.perf_counter()
        key = engine.open_session(pixels)
        h, w = pixels.shape[:2]
        ms = (time.perf_counter() - start) * 1000
        return {"session_id": key, "width": w, "height": h, "encode_ms": round(ms, 1)}

    def _session(session_id: str) -> Any:
        try:
            return engine.session(session_id)
        except KeyError:
            raise BadRequest(
                404,
                f"unknown session {session_id[:40]!r}: expired (the server keeps the last "
                f"{engine.max_sessions}) or never opened; upload the image again",
            ) from None

    @app.get("/v1/sessions/{session_id}/image", response_class=Response)
    def session_image(session_id: str) -> Response:
        """The image as the model sees it, as PNG: what the page draws (any input format, decoded here)."""
        buffer = io.BytesIO()
        Image.fromarray(_session(session_id).image).save(buffer, format="PNG", compress_level=1)
        return Response(buffer.getvalue(), media_type="image/png")

    @app.post("/v1/sessions/{session_id}/segment", response_model=SegmentOut)
    def session_segment(session_id: str, prompt: Prompt) -> dict[str, Any]:
        """Decode prompts against the stored embedding; the encoder does not run."""
        session = _session(session_id)
        shape = session.image.shape[:2]
        boxes = parse_boxes(prompt.boxes, shape, limit=max_prompts)
        points, labels = parse_points(prompt.points, prompt.point_labels, shape, limit=max_prompts)
        start = time.perf_counter()
        if len(points):
            if len(boxes) > 1:
                raise BadRequest(400, "clicks refine one object: send at most one box with points")
            previous = session.previous if prompt.use_previous_mask else None
            prediction = engine.predict_points(
                session.embedding, points, labels, boxes[0] if len(boxes) else None, previous
            )
            session.previous = prediction.low_res[0]
            masks = _masks([prediction], boxes.tolist() or None)
        elif len(boxes):
            chunks: Iterable[Prediction] = engine.decode_boxes(session.embedding, boxes)
            if len(boxes) == 1:  # one object: its mask is the one a click may refine next
                chunks = list(chunks)
                session.previous = chunks[0].low_res[0]
            masks = _masks(chunks, boxes.tolist())
        else:
            raise BadRequest(400, "give boxes, points, or both")
        ms = (time.perf_counter() - start) * 1000
        h, w = shape
        return {"width": w, "height": h, "masks": masks, "decode_ms": round(ms, 1)}

    @app.delete("/v1/sessions/{session_id}")
    def close_session(session_id: str) -> dict[str, bool]:
        return {"closed": engine.close_session(session_id)}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(str(STATIC / "favicon.svg"), media_type="image/svg+xml")

    volumes = volume_store(ttl_s=engine.session_ttl_s)
    limits = {"max_upload_bytes": max_upload_bytes, "max_pixels": max_pixels, "max_prompts": max_prompts}
    app.include_router(volume_router(engine, store=volumes, **limits))
    if dicomweb is not None:
        from kdsam.serve.pacs_routes import pacs_router

        app.include_router(pacs_router(engine, dicomweb, volumes, max_pixels))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
