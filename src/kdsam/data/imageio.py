"""Reading the image and mask files found in practice into uint8 RGB images and bool masks.

The one loading layer: PNG/JPEG/TIFF of any depth and channel layout through Pillow, and single
DICOM slices through pydicom (kdsam.data.medical, which also reads NIfTI, MHA, NRRD and DICOM series
as volumes),
brought to 8 bits by kdsam.data.intensity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from kdsam.data import intensity, medical
from kdsam.errors import BadFileError
from kdsam.utils.atomic import atomic_path

IMAGE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)

Image.MAX_IMAGE_PIXELS = 200_000_000  # ISIC images reach ~30 MP; refuse only absurd files


def _open(path: Path, max_side: int | None = None) -> Image.Image:
    """Open and decode fully, so a truncated file fails here with its name. max_side: let a JPEG
    decode at a reduced scale (draft mode must be set before decoding, or it does nothing)."""
    img = None
    try:
        img = Image.open(path)
        if max_side and img.format == "JPEG" and max(img.size) > max_side:
            img.draft("RGB", _fit(img.size, max_side))
        img.load()
    except FileNotFoundError as err:
        raise BadFileError(f"{path}: file not found") from err
    except IMAGE_ERRORS as err:
        if img is not None:
            img.close()  # a truncated file would otherwise stay open until garbage collection
        raise BadFileError(f"{path}: unreadable or truncated image ({err})") from err
    return img


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(width, height) scaled so the longest side is `max_side`."""
    scale = max_side / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _is_wide(img: Image.Image) -> bool:
    """16-bit, 32-bit integer and float modes: their values are not 0..255."""
    return img.mode in ("I", "F") or img.mode.startswith("I;16")


def read_image(path: str | Path, max_side: int | None = None, window: str | tuple[float, float] = "auto") -> np.ndarray:
    """Any greyscale, RGB, RGBA (alpha dropped), palette or 16-bit image, or a DICOM slice -> HxWx3
    uint8 RGB. See `read_image_with_intensity` for `window`.

    max_side: downscale on decode (JPEG draft mode, then a resize) so huge images never sit in
    memory at full size.
    """
    return read_image_with_intensity(path, max_side, window)[0]


def read_image_with_intensity(
    path: str | Path, max_side: int | None = None, window: str | tuple[float, float] = "auto"
) -> tuple[np.ndarray, dict[str, object]]:
    """(HxWx3 uint8 RGB, how its intensities were brought to 8 bits). window: see
    kdsam.data.intensity; under "auto" a 16-bit image is min-max scaled and an 8-bit one is kept."""
    path = Path(path)
    if medical.is_dicom(path) or medical.is_volume_file(path):
        volume = medical.read_volume(path)
        if volume.array.shape[2] != 1:
            raise BadFileError(f"{path}: a volume of {volume.array.shape[2]} slices; segment it with --box3d")
        grey, record = intensity.to_uint8(volume.slices()[0], window, volume.modality, volume.window)
        rgb = np.repeat(grey[..., None], 3, axis=2)
    else:
        img = _open(path, max_side)
        if _is_wide(img):
            raw = np.asarray(img)
            grey, record = intensity.to_uint8(raw, "minmax" if window == "auto" else window)
            rgb = np.repeat(grey[..., None], 3, axis=2)
        else:
            rgb = np.asarray(img.convert("RGB"))
            record = {"method": "none", "source": "8-bit data used as stored"}
            if window != "auto":
                rgb, record = intensity.to_uint8(rgb.astype(np.float32), window)
    if max_side and max(rgb.shape[:2]) > max_side:
        size = _fit((rgb.shape[1], rgb.shape[0]), max_side)
        rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BILINEAR))
    return np.ascontiguousarray(rgb), record


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header alone; a file Pillow cannot open, or one claiming absurd
    dimensions (a decompression bomb), is a BadFileError naming it."""
    path = Path(path)
    if medical.is_dicom(path) or medical.is_volume_file(path):
        shape = medical.read_volume(path).array.shape
        return shape[1], shape[0]
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except FileNotFoundError as err:
        raise BadFileError(f"{path}: file not found") from err
    except IMAGE_ERRORS as err:
        raise BadFileError(f"{path}: unreadable image ({err})") from err


def read_labels(path: str | Path, threshold: int = 128) -> np.ndarray:
    """A mask file -> HxW integer label map: 0 background, 1 the structure of a binary mask, or the
    stored labels 1..K of a label map (palette masks: their indices, a black entry being background;
    lossless masks whose values all stay below `threshold`). Any channel layout is reduced to one
    channel (max over colour channels; alpha ignored); lossy JPEG masks are binarised at
    `threshold`, never tested == 255."""
    path = Path(path)
    img = _open(path)
    if img.mode in ("P", "PA"):  # (128,0,0) is a label too: only a black palette entry is background
        index = np.asarray(img.convert("P") if img.mode == "PA" else img)
        colours = np.asarray(img.getpalette() or [0, 0, 0], np.uint8).reshape(-1, 3)
        used = np.unique(index)
        if not _grey_palette(colours, used):
            black = np.zeros(256, bool)
            black[: len(colours)] = colours.max(axis=1) == 0
            return np.where(black[index], 0, index).astype(np.uint8)
        img = img.convert("L")  # index i shows grey i: a grey mask stored as a palette, read as one
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if arr.shape[2] >= 3 else arr[..., 0]
    if arr.dtype == bool or arr.max() <= 1:
        return (arr > 0).astype(np.uint8)
    if _is_wide(img):
        values = np.unique(arr)
        return (arr > 0).astype(np.uint8) if len(values) <= 2 else arr.astype(np.int32)
    if img.format != "JPEG" and arr.max() < threshold:  # labels 1..K
        return arr.astype(np.uint8)
    return (arr >= threshold).astype(np.uint8)


def _grey_palette(colours: np.ndarray, used: np.ndarray) -> bool:
    """Does every index in use show the grey of its own value (PIL's L -> P conversion)? Then
    white (255) on black is a binary mask, not label 255."""
    return bool(used.max() < len(colours)) and bool((colours[used] == used[:, None]).all())


def read_mask(path: str | Path, threshold: int = 128) -> np.ndarray:
    """A mask file -> HxW bool: every label of `read_labels` is foreground (their union)."""
    return read_labels(path, threshold) > 0


def write_png(path: str | Path, array: np.ndarray) -> None:
    """Atomic PNG write: a crash never leaves a half-written file under the final name."""
    arr = array.astype(np.uint8) * 255 if array.dtype == bool else array
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format="PNG")
