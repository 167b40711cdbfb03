"""A user's prompts on one 2D image: checked by one rule and decoded one way, whoever asks
(`kdsam predict`, the server, `kdsam evaluate`'s click protocols, the volume code's slices).

Conventions, in pixels of the original W x H image:
- a box is [x0, y0, x1, y1] on pixel edges, exclusive max: 0 <= x0 < x1 <= W and 0 <= y0 < y1 <= H;
- a click is [x, y] on a pixel: 0 <= x < W and 0 <= y < H, labelled 1 (object) or 0 (background).

One object is its clicks, at most one box and optionally a mask prompt (the previous step's 256x256
logits). A lone click with neither box nor mask prompt is ambiguous (a part, or the whole?), so SAM
answers with three masks and the one it scores best is taken, as SAM's own protocol does; any
other prompt takes SAM's single-mask output.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from kdsam.errors import KdsamError

if TYPE_CHECKING:  # the checks serve the server's request parsing, which must not load torch
    from kdsam.predictor import Predictor


class PromptError(KdsamError):
    """A prompt that does not fit its image (or a second box with clicks): one line, with the rule."""


@contextmanager
def about(where: object) -> Iterator[None]:
    """Checks whose one line starts with `where` (the file the prompts are for)."""
    try:
        yield
    except PromptError as err:
        raise PromptError(f"{where}: {err}") from err


def _named(names: Sequence[str] | None, i: int, kind: str, values: np.ndarray) -> str:
    return names[i] if names is not None else f"{kind} {[round(float(v), 2) for v in values]}"


def check_boxes(boxes: Any, shape: tuple[int, int], names: Sequence[str] | None = None) -> np.ndarray:
    """Nx4 boxes as float32, each of positive area and inside the HxW image (NaN fails both), else
    one line naming the box (`names[i]`, e.g. the text typed; default its numbers)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    h, w = shape
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        if not (x0 < x1 and y0 < y1):
            raise PromptError(f"{_named(names, i, 'box', boxes[i])}: X0 must be less than X1 and Y0 less than Y1")
        if not (x0 >= 0 and x1 <= w and y0 >= 0 and y1 <= h):
            raise PromptError(
                f"{_named(names, i, 'box', boxes[i])} reaches outside the {w}x{h} image "
                f"(0 <= X0 < X1 <= {w}, 0 <= Y0 < Y1 <= {h})"
            )
    return boxes


def points_inside(points: Any, shape: tuple[int, int], names: Sequence[str] | None = None) -> np.ndarray:
    """Nx2 float32 clicks, each on a pixel of the HxW image (NaN is not), else one line naming the click."""
    points = np.asarray(points, np.float32).reshape(-1, 2)
    h, w = shape
    for i, (x, y) in enumerate(points):
        if not (0 <= x < w and 0 <= y < h):
            raise PromptError(
                f"{_named(names, i, 'click', points[i])} lies outside the {w}x{h} image (0 <= X < {w}, 0 <= Y < {h})"
            )
    return points


def check_points(
    points: Any, labels: Any, shape: tuple[int, int], names: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(Nx2 float32 clicks, N int64 labels), each click on a pixel of the HxW image (`points_inside`)
    and each label 1 or 0, else one line naming the click."""
    points = points_inside(points, shape, names)
    labels = np.asarray(labels).reshape(-1)
    if len(labels) != len(points):
        raise PromptError(f"{len(points)} clicks and {len(labels)} labels: give one label per click")
    for i, label in enumerate(labels):
        if label not in (0, 1):
            raise PromptError(f"{_named(names, i, 'click', points[i])}: its label is 1 (object) or 0 (background)")
    return points, labels.astype(np.int64)


def one_box(boxes: np.ndarray) -> np.ndarray | None:
    """The box that goes with clicks (None without one): clicks describe one object, so at most one."""
    if len(boxes) > 1:
        raise PromptError(f"clicks describe one object: give at most one box with them, not {len(boxes)}")
    return boxes[0] if len(boxes) else None


def is_ambiguous(n_points: int, has_box: bool, has_mask: bool) -> bool:
    """A lone click and nothing else: SAM's three masks, the best scored taken."""
    return n_points == 1 and not has_box and not has_mask


def decode_object(
    predictor: Predictor,
    points: np.ndarray,
    labels: np.ndarray,
    box: np.ndarray | None = None,
    mask_input: np.ndarray | None = None,
) -> tuple[np.ndarray, float, np.ndarray]:
    """One object on the image set in `predictor` -> (HxW bool mask, the
    decoder's IoU estimate, its 256x256 low-res logits, the mask prompt of a next step). Prompts
    are checked already (`check_boxes`, `check_points`)."""
    clicks = len(points) > 0
    masks, scores, low_res = predictor.predict(
        point_coords=np.asarray(points, np.float32).reshape(-1, 2) if clicks else None,
        point_labels=np.asarray(labels).reshape(-1) if clicks else None,
        box=box,
        mask_input=None if mask_input is None else mask_input[None],
        multimask_output=is_ambiguous(len(points), box is not None, mask_input is not None),
    )
    best = int(np.argmax(scores))
    return masks[best], float(scores[best]), low_res[best]
