"""The PACS endpoints under /v1/pacs (`kdsam serve --dicomweb URL`): list the studies and series
(QIDO-RS), open a series (WADO-RS) as an image session or a volume, and store a volume's label map
as a DICOM SEG (STOW-RS). The PACS's credentials are the server's (kdsam.infer.dicomweb reads them
from its environment); a failing PACS answers 502 with the one line, a SEG that could not be stored
is kept on the server's disk and the line says where."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from kdsam.errors import KdsamError
from kdsam.infer import dicomseg, dicomweb
from kdsam.infer.dicomweb import PacsError, Target
from kdsam.serve.engine import Engine
from kdsam.serve.inputs import MAX_PIXELS, BadRequest, decode_image
from kdsam.serve.store import ExpiringStore
from kdsam.serve.volumes import VolumeSession, open_volume, page_labels

STUDY_FIELDS = ["PatientID", "PatientName", "StudyDate", "StudyDescription", "ModalitiesInStudy"]
SERIES_FIELDS = ["Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances"]


class OpenedOut(BaseModel):
    kind: str = Field(description="'volume' (use /v1/volumes/{volume_id}) or 'image' (use /v1/sessions/{session_id})")
    volume_id: str | None = None
    session_id: str | None = None
    width: int
    height: int
    depth: int = 1


class StoredOut(BaseModel):
    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str = Field(description="the stored SEG's SOP Instance UID")
    segments: list[str]


@contextmanager
def _bad_gateway() -> Iterator[None]:
    """The PACS's failure is not the client's: 502 and the one line."""
    try:
        yield
    except PacsError as err:
        raise BadRequest(502, str(err)) from err


def _value(item: dict, keyword: str) -> str | None:
    from pydicom.datadict import tag_for_keyword

    return dicomweb.json_value(item, f"{tag_for_keyword(keyword):08X}")


def pacs_router(
    engine: Engine, root: Target, volumes: ExpiringStore[VolumeSession], max_pixels: int = MAX_PIXELS
) -> APIRouter:
    """The routes over the DICOMweb service `root`; opened volumes go into `volumes` (shared with
    /v1/volumes, which shows and prompts them), held to `max_pixels` as uploads are."""
    router = APIRouter(prefix="/v1/pacs", tags=["pacs"])

    def client() -> Any:
        return dicomweb.connect(root)

    @router.get("/studies")
    def studies(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        """The PACS's studies (QIDO-RS), newest first as the PACS orders them."""
        with _bad_gateway(), dicomweb.pacs_errors("listing studies", root.root):
            found = client().search_for_studies(fields=STUDY_FIELDS, limit=limit)
        return [
            {
                "study_uid": _value(item, "StudyInstanceUID"),
                "patient_id": _value(item, "PatientID"),
                "patient_name": _value(item, "PatientName"),
                "date": _value(item, "StudyDate"),
                "description": _value(item, "StudyDescription"),
                "modalities": item.get("00080061", {}).get("Value") or [],
            }
            for item in found
        ]

    @router.get("/studies/{study}/series")
    def series(study: str) -> list[dict[str, Any]]:
        """The study's series (QIDO-RS); `image` says whether kdsam can open it (not a SEG, SR, ...)."""
        target = _target(root, study)
        with _bad_gateway(), dicomweb.pacs_errors(f"listing study {study}", root.root):
            found = client().search_for_series(target.study, fields=SERIES_FIELDS)
        rows = []
        for item in found:
            modality = _value(item, "Modality")
            rows.append(
                {
                    "series_uid": _value(item, "SeriesInstanceUID"),
                    "modality": modality,
                    "number": _value(item, "SeriesNumber"),
                    "description": _value(item, "SeriesDescription"),
                    "instances": _value(item, "NumberOfSeriesRelatedInstances"),
                    "image": modality not in dicomweb.NON_IMAGE_MODALITIES,
                }
            )
        return rows

    @router.post("/studies/{study}/series/{series_uid}/open", response_model=OpenedOut)
    def open_series(study: str, series_uid: str, window: str = "auto") -> dict[str, Any]:
        """Retrieve the series (WADO-RS) and open it as local DICOM opens: several images are a volume
        (slices embedded in the background), one image is an image session."""
        target = _target(root, study, series_uid)
        with tempfile.TemporaryDirectory(prefix="kdsam-wado-") as scratch, _bad_gateway():
            try:
                path = dicomweb.fetch_series(client(), target, Path(scratch))
            except PacsError:
                raise
            except KdsamError as err:  # a series with no images: the client chose it
                raise BadRequest(400, str(err)) from err
            if path.is_file():
                pixels = decode_image(path.read_bytes(), path.name, max_pixels=max_pixels, window=window)
                h, w = pixels.shape[:2]
                return {"kind": "image", "session_id": engine.open_session(pixels), "width": w, "height": h}
            files = [(p.name, p.read_bytes()) for p in sorted(path.iterdir())]
            session = open_volume(engine, files, window, series_uid, max_pixels)
        depth, h, w = session.stack.shape[:3]
        return {"kind": "volume", "volume_id": volumes.add(session), "width": w, "height": h, "depth": depth}

    @router.post("/volumes/{volume_id}/seg", response_model=StoredOut)
    async def save_seg(
        volume_id: str, request: Request, names: Annotated[list[str] | None, Query(alias="name")] = None
    ) -> dict[str, Any]:
        """Store the page's label map (body: gzip of D*H*W uint8, C order; label k = segment k, named
        by the k-th `name`) as a DICOM SEG of the volume's DICOM series (STOW-RS)."""
        try:
            session = volumes.get(volume_id)
        except KeyError:
            raise BadRequest(404, f"unknown volume {volume_id[:40]!r}: expired or never opened") from None
        if not session.reference.sources:
            raise BadRequest(400, f"{session.name}: not a DICOM series; a SEG describes DICOM images")
        labels = page_labels(session, await request.body())
        return await run_in_threadpool(_store, root, session, labels, names or [], engine.name)

    return router


def _target(root: Target, study: str, series: str | None = None) -> Target:
    for uid in (study, series):
        if uid is not None and not dicomweb.UID.match(uid):
            raise BadRequest(400, f"{uid[:80]!r} is not a DICOM UID (digits and dots)")
    return Target(root.root, study, series)


def _store(root: Target, session: VolumeSession, labels: np.ndarray, names: list[str], model: str) -> dict:
    """Build the SEG, write it to a private folder, store it; the folder goes once the PACS holds it."""
    try:
        segments = dicomseg.segment_names(int(labels.max(initial=0)), names)
    except KdsamError as err:
        raise BadRequest(400, str(err)) from err
    seg = dicomseg.build_seg(session.reference.sources or [], labels, segments, model)
    folder = Path(tempfile.mkdtemp(prefix="kdsam-seg-"))
    path = folder / f"{seg.SeriesInstanceUID}.dcm"
    dicomseg.write_seg(path, seg)
    with _bad_gateway():
        uid = dicomweb.store_seg(dicomweb.connect(root), root, path)
    shutil.rmtree(folder, ignore_errors=True)
    return {
        "study_instance_uid": str(seg.StudyInstanceUID),
        "series_instance_uid": str(seg.SeriesInstanceUID),
        "sop_instance_uid": uid,
        "segments": segments,
    }
