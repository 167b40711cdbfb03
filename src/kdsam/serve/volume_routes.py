"""The volume endpoints under /v1/volumes: open a volume, show its slices, prompt it with 3D boxes and
slice clicks, download its label map as NIfTI. The work is in kdsam.serve.volumes."""

from __future__ import annotations

import io
import time
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kdsam.serve.engine import Engine
from kdsam.serve.inputs import MAX_PIXELS, MAX_PROMPTS, MAX_UPLOAD_BYTES, BadRequest, parse_points
from kdsam.serve.masks import mask_png
from kdsam.serve.store import DEFAULT_TTL_S, ExpiringStore
from kdsam.serve.volumes import VolumeSession, nifti_bytes, open_volume, segment_object


class VolumeOut(BaseModel):
    volume_id: str
    name: str = Field(description="the input's name, which downloads are named after")
    width: int
    height: int
    depth: int
    embedded: int = Field(description="slices embedded so far (the rest are embedded in the background)")
    window: dict[str, Any] = Field(description="the intensity mapping applied to the slices")


class SliceMask(BaseModel):
    z: int
    png: str = Field(description="base64 PNG of the HxW mask of slice z, 0/255")


class VolumeSegmentOut(BaseModel):
    width: int
    height: int
    depth: int
    slices: list[SliceMask]
    decode_ms: float


class VolumePrompt(BaseModel):
    """One object's prompts: its 3D box, its clicks on any slices in the order they came, or both."""

    box3d: list[float] | None = Field(default=None, description="[x0, y0, z0, x1, y1, z1], inclusive voxel indices")
    points: list[list[float]] = Field(default=[], description="[[x, y, z], ...] clicks, z the slice, oldest first")
    point_labels: list[int] | None = Field(default=None, description="1 object, 0 background; default all 1")


def volume_store(max_volumes: int = 4, ttl_s: float = DEFAULT_TTL_S) -> ExpiringStore[VolumeSession]:
    """At most `max_volumes` open volumes, each forgotten (its embedding stopped) after `ttl_s` idle."""
    return ExpiringStore(max_volumes, ttl_s, on_drop=lambda s: s.stopped.set())


def volume_router(
    engine: Engine,
    max_volumes: int = 4,
    ttl_s: float = DEFAULT_TTL_S,
    store: ExpiringStore[VolumeSession] | None = None,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    max_prompts: int = MAX_PROMPTS,
) -> APIRouter:
    """The routes, over `store` (default: a volume_store(max_volumes, ttl_s)), which other routers that
    open volumes (a PACS's series) may share; `max_pixels` bounds each slice, `max_prompts` the clicks
    of a request."""
    router = APIRouter(prefix="/v1/volumes", tags=["volumes"])
    store = volume_store(max_volumes, ttl_s) if store is None else store

    def get(volume_id: str) -> VolumeSession:
        try:
            return store.get(volume_id)
        except KeyError:
            raise BadRequest(
                404, f"unknown volume {volume_id[:40]!r}: expired or never opened; open the volume again"
            ) from None

    def describe(volume_id: str, session: VolumeSession) -> dict[str, Any]:
        depth, h, w = session.stack.shape[:3]
        return {"volume_id": volume_id, "name": session.name, "width": w, "height": h, "depth": depth,
                "embedded": session.embedded, "window": session.window}  # fmt: skip

    @router.post("", response_model=VolumeOut)
    def open_(
        files: Annotated[list[UploadFile], File(description="one NIfTI/MHA/NRRD (.mhd + .raw), 3D npz, DICOM series")],
        window: Annotated[str | None, Form(description="auto, a CT preset, percentile, minmax or L,W")] = None,
        name: Annotated[str | None, Form(description="what downloads are named after (a folder's name)")] = None,
    ) -> dict[str, Any]:
        """Read the volume and start embedding its slices in the background, the middle one first."""
        budget, uploads = max_upload_bytes, []  # all the files together: a series is one upload
        for upload in files:
            data = upload.file.read(budget + 1)
            budget -= len(data)
            if budget < 0:
                raise BadRequest(413, f"the files together are over the {max_upload_bytes} byte upload limit")
            uploads.append((upload.filename or "upload", data))
        session = open_volume(engine, uploads, window or "auto", name, max_pixels)
        return describe(store.add(session), session)

    @router.get("/{volume_id}", response_model=VolumeOut)
    def info(volume_id: str) -> dict[str, Any]:
        """The volume's size and how many slices are embedded: the page's progress indicator."""
        return describe(volume_id, get(volume_id))

    @router.get("/{volume_id}/slices/{z}", response_class=Response)
    def slice_png(volume_id: str, z: int) -> Response:
        """Slice z as the model sees it (8-bit, after the window), as PNG."""
        stack = get(volume_id).stack
        if not 0 <= z < len(stack):
            raise BadRequest(404, f"slice {z} is not inside 0..{len(stack) - 1}")
        buffer = io.BytesIO()
        Image.fromarray(stack[z]).save(buffer, format="PNG", compress_level=1)
        return Response(buffer.getvalue(), media_type="image/png", headers={"cache-control": "private, max-age=3600"})

    @router.post("/{volume_id}/segment", response_model=VolumeSegmentOut)
    def segment(volume_id: str, prompt: VolumePrompt) -> dict[str, Any]:
        """One object's 3D box and clicks -> its masks: the box's slices and every slice with a mask
        (the interactive 3D rule of `kdsam predict`, kdsam.infer.interactive3d)."""
        session = get(volume_id)
        depth, h, w = session.stack.shape[:3]
        points, labels = parse_points(prompt.points, prompt.point_labels, (depth, h, w), limit=max_prompts)
        start = time.perf_counter()
        masks = segment_object(session, prompt.box3d, points, labels)
        ms = (time.perf_counter() - start) * 1000
        slices = [{"z": z, "png": mask_png(np.asarray(m))} for z, m in sorted(masks.items())]
        return {"width": w, "height": h, "depth": depth, "slices": slices, "decode_ms": round(ms, 1)}

    @router.post("/{volume_id}/nifti", response_class=Response)
    async def nifti(volume_id: str, request: Request) -> Response:
        """The page's label map (body: gzip of D*H*W uint8, C order) -> NIfTI on the input's grid."""
        session = get(volume_id)
        body = await request.body()
        filename = f"{session.name}_mask.nii.gz"
        return Response(
            await run_in_threadpool(nifti_bytes, session, body),
            media_type="application/gzip",
            headers={"content-disposition": f'attachment; filename="{filename}"'},
        )

    @router.delete("/{volume_id}")
    def close(volume_id: str) -> dict[str, bool]:
        return {"closed": store.pop(volume_id)}

    return router
