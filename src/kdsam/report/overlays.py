"""Pictures of masks on images: one overlay function and one grid writer, shared by evaluation and demo.

Drawing goes through matplotlib's object API on an Agg canvas (no pyplot), so it works headless and
never changes the caller's global backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from scipy import ndimage

from kdsam.predictor import as_rgb_uint8
from kdsam.utils.atomic import atomic_path

Color = tuple[int, int, int]
TRUTH_COLOR: Color = (40, 220, 80)
PRED_COLOR: Color = (255, 60, 40)
BOX_COLOR: Color = (255, 220, 0)


def overlay(image: np.ndarray, mask: np.ndarray, color: Color = PRED_COLOR, alpha: float = 0.4) -> np.ndarray:
    """HxWx3 uint8: `mask` tinted over the image, with a solid outline so thin errors stay visible."""
    out = as_rgb_uint8(image).astype(np.float32)
    mask = np.asarray(mask, dtype=bool)
    tint = np.asarray(color, np.float32)
    out[mask] = (1 - alpha) * out[mask] + alpha * tint
    outline = mask & ~ndimage.binary_erosion(mask, iterations=max(1, round(max(mask.shape) / 300)))
    out[outline] = tint
    return out.astype(np.uint8)


def draw_boxes(image: np.ndarray, boxes: np.ndarray, color: Color = BOX_COLOR) -> np.ndarray:
    """A copy of the image with Nx4 XYXY boxes drawn as rectangles (the prompts a model was given)."""
    out = as_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    t = max(1, round(max(h, w) / 300))
    for x0, y0, x1, y1 in np.round(np.asarray(boxes).reshape(-1, 4)).astype(int):
        x0, x1 = np.clip([x0, x1 - 1], 0, w - 1)
        y0, y1 = np.clip([y0, y1 - 1], 0, h - 1)
        out[y0 : y0 + t, x0 : x1 + 1] = color
        out[max(y1 - t + 1, 0) : y1 + 1, x0 : x1 + 1] = color
        out[y0 : y1 + 1, x0 : x0 + t] = color
        out[y0 : y1 + 1, max(x1 - t + 1, 0) : x1 + 1] = color
    return out


def draw_points(image: np.ndarray, points: np.ndarray) -> np.ndarray:
    """A copy of the image with Nx3 (x, y, label) click prompts drawn as squares: positive ones in
    the truth colour, negative ones in the prediction colour."""
    out = as_rgb_uint8(image).copy()
    h, w = out.shape[:2]
    r = max(2, round(max(h, w) / 150))
    for x, y, label in np.round(np.asarray(points, dtype=np.float64).reshape(-1, 3)).astype(int):
        out[max(y - r, 0) : min(y + r + 1, h), max(x - r, 0) : min(x + r + 1, w)] = (
            TRUTH_COLOR if label == 1 else PRED_COLOR
        )
    return out


def _thumbnail(image: np.ndarray, max_side: int) -> np.ndarray:
    """Shrink large images before plotting: a grid of 30-MP ISIC images would need gigabytes."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    scale = max_side / max(h, w)
    return np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale)))))


def agg_figure(figsize: tuple[float, float], dpi: int = 100) -> Figure:
    """A matplotlib figure on its own Agg canvas: headless, and no global backend switched."""
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write a figure as PNG, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


def grid(
    rows: Sequence[Sequence[np.ndarray]],
    path: str | Path,
    row_titles: Sequence[str] = (),
    col_titles: Sequence[str] = (),
    max_side: int = 384,
) -> Path:
    """Write a PNG of images laid out in rows (e.g. image / truth / prediction per case, or
    image / truth / teacher / student per sample); titles label rows and columns. Atomic."""
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    fig = agg_figure((3.2 * n_cols, 3.0 * n_rows))
    axes = fig.subplots(n_rows, n_cols, squeeze=False)
    for i, row in enumerate(rows):
        for j in range(n_cols):
            ax = axes[i][j]
            ax.set_axis_off()
            if j < len(row):
                ax.imshow(_thumbnail(as_rgb_uint8(row[j]), max_side))
            if i == 0 and j < len(col_titles):
                ax.set_title(col_titles[j], fontsize=10)
            if j == 0 and i < len(row_titles):
                ax.text(-0.04, 0.5, row_titles[i], transform=ax.transAxes, rotation=90, ha="right", va="center")
    fig.tight_layout()
    return save_figure(fig, path)
