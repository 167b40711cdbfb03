"""`hc18:PATH`: HC18 (fetal head circumference) as published. training_set/ holds <NNN>_HC.png,
<NNN>_2HC.png, ... and <name>_Annotation.png, the head as an ellipse OUTLINE; the target is the
filled ellipse (an outline used as a mask would be a silent failure). test_set/ has no
annotations, so it is not part of the labelled data."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from scipy import ndimage
from skimage.measure import EllipseModel

from kdsam.data.dataset import Record, union_of_masks
from kdsam.data.folder import image_files
from kdsam.data.layout import existing, layout_error, require_records
from kdsam.errors import BadFileError, KdsamError

TRAINING = "training_set"
CSV_NAME = "training_set_pixel_size_and_HC.csv"
ANNOTATION = "_Annotation"
EXPECTED = f"{TRAINING}/ with <NNN>_HC.png and <NNN>_HC{ANNOTATION}.png, and {CSV_NAME} beside it"


def read_measurements(path: Path) -> dict[str, dict[str, float]]:
    """{image file name: {"pixel_size_mm", "hc_mm"}} from the training CSV; {} when it is absent."""
    if not path.is_file():
        return {}
    try:
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        return {
            row[0].strip(): {"pixel_size_mm": float(row[1]), "hc_mm": float(row[2])}
            for row in rows[1:]
            if row and row[0].strip()
        }
    except (OSError, ValueError, IndexError) as err:
        raise KdsamError(
            f"{path}: not an HC18 CSV ({err}); expected rows of filename, pixel size(mm), head circumference (mm)"
        ) from err


def hc18_records(root: Path) -> list[Record]:
    """One record per training image, with its pixel size and head circumference from the CSV."""
    folder = root / TRAINING
    if not folder.is_dir():
        raise layout_error(root, "HC18", EXPECTED)
    measured = read_measurements(root / CSV_NAME)
    records = [
        Record(img.stem, img, existing(folder / f"{img.stem}{ANNOTATION}.png"), dict(measured.get(img.name, {})))
        for img in image_files(folder)
        if not img.stem.endswith(ANNOTATION)
    ]
    return require_records(records, root, "HC18", EXPECTED)


def filled_head(record: Record) -> np.ndarray:
    """read_target for HC18: the annotation's outline, filled."""
    try:
        return fill_outline(union_of_masks(record))
    except ValueError as err:
        raise BadFileError(f"{record.masks[0]}: {err}") from err


def fill_outline(outline: np.ndarray) -> np.ndarray:
    """HxW bool outline -> the filled region. Hole filling where the outline is closed; where it is
    not (hole filling then adds less than the outline itself), an ellipse fitted to its pixels."""
    if not outline.any():
        return outline
    filled = ndimage.binary_fill_holes(outline)
    if filled.sum() - outline.sum() >= outline.sum():
        return filled
    return ellipse_mask(outline) | outline


def ellipse_mask(outline: np.ndarray) -> np.ndarray:
    """The inside of the ellipse fitted (least squares) to the True pixels of `outline`."""
    ys, xs = np.nonzero(outline)
    xc, yc, a, b, theta = _fit_ellipse(np.column_stack([xs, ys]).astype(float))
    yy, xx = np.mgrid[: outline.shape[0], : outline.shape[1]]
    dx, dy = xx - xc, yy - yc
    u = dx * np.cos(theta) + dy * np.sin(theta)  # the model's own axes (see EllipseModel.predict_xy)
    v = -dx * np.sin(theta) + dy * np.cos(theta)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _fit_ellipse(points: np.ndarray) -> tuple[float, float, float, float, float]:
    """(xc, yc, a, b, theta); ValueError when no ellipse fits. skimage >= 0.26 renamed the API."""
    if hasattr(EllipseModel, "from_estimate"):
        model = EllipseModel.from_estimate(points)
        if not model:
            raise ValueError("the outline is not closed and no ellipse fits its pixels")
        (xc, yc), (a, b), theta = model.center, model.axis_lengths, model.theta
    else:  # pragma: no cover - older scikit-image
        model = EllipseModel()
        if not model.estimate(points):
            raise ValueError("the outline is not closed and no ellipse fits its pixels")
        xc, yc, a, b, theta = model.params
    if not (np.isfinite([xc, yc, a, b, theta]).all() and a > 0 and b > 0):
        raise ValueError("the outline is not closed and no ellipse fits its pixels")
    return float(xc), float(yc), float(a), float(b), float(theta)
