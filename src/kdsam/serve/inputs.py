"""Checking what clients send: uploaded image files and prompts. Every refusal is a `BadRequest` with
an HTTP status and one line saying what is wrong, so the server answers it and keeps serving."""

from __future__ import annotations

import json
import math
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from kdsam.data.imageio import read_image
from kdsam.errors import KdsamError
from kdsam.infer.prompts import PromptError, check_boxes, points_inside

MAX_UPLOAD_BYTES = 64 * 2**20
MAX_PIXELS = 50_000_000  # ISIC's largest images are ~30 MP; more is a mistake or an attack
MAX_PROMPTS = 64  # boxes, or clicks, per request: each box is a decoder pass and a full-size mask
SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,8}")


class BadRequest(Exception):
    """A client error: `status` (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _claimed_pixels(path: Path) -> float | None:
    """The values the file's header claims, over every dimension (a volume's slices and frames too,
    since the whole volume is decoded), without decoding it (None: a header none of the readers
    knows). DICOM comes first: a DICOM file's 128-byte preamble may be a TIFF header (dual-format
    files), which PIL would read instead."""
    from kdsam.data import medical

    try:
        if medical.is_dicom(path):
            import pydicom

            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            dims = (ds.Rows, ds.Columns, ds.get("NumberOfFrames") or 1, ds.get("SamplesPerPixel") or 1)
            return float(math.prod(float(n) for n in dims))
        if medical.is_volume_file(path):
            return float(math.prod(float(n) for n in medical.volume_shape(path)))
        with Image.open(path) as img:
            return img.size[0] * img.size[1]
    except Image.DecompressionBombError:  # PIL's own ceiling, far above ours
        return math.inf
    except Exception:  # unreadable header: the reader below names the problem
        return None


def _suffix(name: str) -> str:
    """The upload's format suffixes (".png", ".nii.gz"), which some readers go by; anything else
    (a 300-character or odd-character suffix would make the temporary file's name invalid) is dropped."""
    suffixes = [s for s in Path(name).suffixes[-2:] if SUFFIX.fullmatch(s)]
    return "".join(suffixes) or ".img"


def decode_image(
    data: bytes,
    filename: str | None,
    max_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    window: str = "auto",
) -> np.ndarray:
    """Uploaded bytes -> HxWx3 uint8 RGB, through the same reader as every kdsam command, with the
    intensity `window` (auto, a CT preset, percentile, minmax or "L,W"). A volume (NIfTI, MHA, NRRD,
    a multi-frame DICOM) gives its middle slice along the third axis, as a viewer opens it. The bytes
    go to a temporary file named like the upload, since some formats are recognised by their suffix."""
    from kdsam.data import intensity, medical

    name = Path(filename or "upload").name
    if not data:
        raise BadRequest(400, f"{name}: empty file; send the image's bytes in the 'image' field")
    if len(data) > max_bytes:
        raise BadRequest(413, f"{name}: over the {max_bytes} byte upload limit")
    try:
        mapping = intensity.parse_window(window)
    except KdsamError as err:
        raise BadRequest(400, str(err).splitlines()[0].replace("--window", "window", 1)) from err  # a form field here
    with tempfile.TemporaryDirectory(prefix="kdsam-upload-") as tmp:
        path = Path(tmp) / f"upload{_suffix(name)}"
        path.write_bytes(data)
        pixels = _claimed_pixels(path)
        if pixels is not None and pixels > max_pixels:
            raise BadRequest(
                413, f"{name}: its header claims {pixels:.0f} pixels, over the {max_pixels} pixel limit (--max-pixels)"
            )
        try:
            if medical.is_dicom(path) or medical.is_volume_file(path):
                volume = medical.read_volume(path)
                middle = volume.slices()[volume.array.shape[2] // 2]
                grey, _ = intensity.to_uint8(middle, mapping, volume.modality, volume.window)
                return np.repeat(grey[..., None], 3, axis=2)
            return read_image(path, window=mapping)
        except MemoryError as err:
            raise BadRequest(413, f"{name}: too large to decode in this server's memory") from err
        except Exception as err:  # any reader's failure on a damaged upload is the client's, not a 500
            known = isinstance(err, KdsamError)
            message = str(err).splitlines()[0] if known else f"{name}: unreadable ({type(err).__name__}: {err})"
            hint = "send a PNG, JPEG, TIFF, DICOM, NIfTI, MHA, NRRD or other image kdsam reads"
            raise BadRequest(400, f"{message.replace(str(path), name)} ({hint})") from err


def _load(value: Any, field: str) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value) if value.strip() else []
        except json.JSONDecodeError as err:
            raise BadRequest(400, f"{field}: not JSON ({err.msg}); send e.g. [[10, 20, 110, 140]]") from err
        except (RecursionError, ValueError) as err:  # nested thousands deep; an integer of 5000 digits
            raise BadRequest(400, f"{field}: JSON nested too deeply or with too long a number") from err
    return [] if value is None else value


def _listed(value: Any, field: str, shape: str, limit: int) -> list[Any]:
    """A JSON list of at most `limit` prompts (counted before any is looked at)."""
    items = _load(value, field)
    if not isinstance(items, list):
        raise BadRequest(400, f"{field}: expected a JSON list of {shape}")
    if len(items) > limit:
        raise BadRequest(400, f"{field}: {len(items)} given, over the limit of {limit} per request (--max-prompts)")
    return items


def _finite(v: float) -> bool:
    """math.isfinite, with an integer too large for a float (10**400 is valid JSON) not finite."""
    try:
        return math.isfinite(v)
    except OverflowError:
        return False


def _numbers(item: Any, n: int, field: str) -> list[float]:
    ok = isinstance(item, (list, tuple)) and len(item) == n
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) and _finite(v) for v in item)
    if not ok:
        raise BadRequest(400, f"{field}: each entry must be {n} finite numbers, got {json.dumps(item)[:80]}")
    return [float(v) for v in item]


@contextmanager
def _prompt_rule(field: str) -> Iterator[None]:
    """The bounds every entry point checks prompts by (kdsam.infer.prompts), refused as this field's 400."""
    try:
        yield
    except PromptError as err:
        raise BadRequest(400, f"{field}: {err}") from err


def parse_boxes(value: Any, shape: tuple[int, int], field: str = "boxes", limit: int = MAX_PROMPTS) -> np.ndarray:
    """A JSON list of at most `limit` [x0, y0, x1, y1] in image pixels -> Nx4 float32, each inside
    the WxH image."""
    items = _listed(value, field, "[x0, y0, x1, y1] boxes", limit)
    with _prompt_rule(field):
        return check_boxes([_numbers(item, 4, field) for item in items], shape)


def parse_points(
    points: Any, labels: Any, shape: tuple[int, ...], limit: int = MAX_PROMPTS
) -> tuple[np.ndarray, np.ndarray]:
    """At most `limit` clicks and their labels (1 object, 0 background; default 1): [[x, y], ...]
    inside an (H, W) image -> Nx2, or [[x, y, z], ...] inside a (D, H, W) volume, z a slice index -> Nx3."""
    n = len(shape)
    items = _listed(points, "points", "[x, y] clicks" if n == 2 else "[x, y, z] clicks", limit)
    h, w = shape[-2:]
    coords = np.asarray([_numbers(p, n, "points") for p in items], np.float32).reshape(-1, n)
    with _prompt_rule("points"):
        points_inside(coords[:, :2], (h, w))
    if n == 3 and len(coords) and not np.isin(coords[:, 2], np.arange(shape[0])).all():
        raise BadRequest(400, f"points: a click's z is not a slice index 0..{shape[0] - 1} (clicks are [x, y, z])")
    marks = _load(labels, "point_labels") if labels is not None else [1] * len(coords)
    if not isinstance(marks, list) or len(marks) != len(coords) or any(m not in (0, 1) for m in marks):
        raise BadRequest(400, "point_labels: one label per point, 1 (object) or 0 (background)")
    return coords, np.asarray(marks, np.int64)
