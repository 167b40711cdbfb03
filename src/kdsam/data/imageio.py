"""Reading the image and mask files found in practice into uint8 RGB images and bool masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdsam.errors import KdsamError

Image.MAX_IMAGE_PIXELS = 200_000_000  # ISIC images reach ~30 MP; refuse only absurd files


class BadFileError(KdsamError):
    """An unreadable or inconsistent file: reported with its name and skipped, never fatal to a run."""


def _open(path: Path) -> Image.Image:
    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError as err:
        raise BadFileError(f"{path}: file not found") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadFileError(f"{path}: unreadable or truncated image ({err})") from err
    return img


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """16-bit and float data -> uint8 by min-max over the image (scanner ranges vary, so absolute
    scaling by 65535 would leave most ultrasound/X-ray exports nearly black)."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float64)
    lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return np.clip((arr - lo) / (hi - lo) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def read_image(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """Any greyscale, RGB, RGBA (alpha dropped), palette or 16-bit image -> HxWx3 uint8 RGB.

    max_side: downscale on decode (JPEG draft mode, then a resize) so huge images never sit in
    memory at full size.
    """
    path = Path(path)
    img = _open(path)
    if max_side and max(img.size) > max_side:
        scale = max_side / max(img.size)
        target = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        if img.format == "JPEG":
            img.draft("RGB", target)
        img = img.resize(target, Image.Resampling.BILINEAR) if img.mode in ("RGB", "L") else img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return np.repeat(_to_uint8(np.asarray(img))[..., None], 3, axis=2)
    rgb = np.asarray(img.convert("RGB"))
    if max_side and max(rgb.shape[:2]) > max_side:
        scale = max_side / max(rgb.shape[:2])
        size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(rgb)


def read_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """A mask file -> HxW bool. Any channel layout is reduced to one channel (max over colour
    channels; alpha ignored); lossy JPEG masks are binarised at `threshold`, never tested == 255."""
    path = Path(path)
    img = _open(path)
    arr = np.asarray(img)
    if img.mode == "P":
        arr = np.asarray(img.convert("L"))
    elif img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return arr > 0
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.dtype == bool:
        return arr
    if arr.max() <= 1:  # 0/1 label maps
        return arr > 0
    return arr >= threshold


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Atomic PNG write: a crash never leaves a half-written file under the final name."""
    from kdsam.utils.atomic import atomic_path

    arr = array.astype(np.uint8) * 255 if array.dtype == bool else array
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
