"""3D box prompts on a stack of slices, the LiteMedSAM protocol (CVPR24_LiteMedSAM_infer.py, 3D).

For a box (x0, y0, z0, x1, y1, z1), inclusive voxel indices, the middle slice int((z1 - z0) / 2 + z0)
is segmented from the box's (x0, y0, x1, y1); then each slice up to z1, and after that each slice
down to z0, takes its box from its neighbour's mask: the mask resized into the model's frame, its
bounding box widened by 3 pixels there and clipped to the frame (the 2D box again where the
neighbour's mask is empty). Boxes are segmented in order, each into its own volume, and written
into the label map as box i -> label i + 1, later boxes over earlier ones. Every step that maps
between image and frame is the model's own transform, so a teacher whose transform is the official
one reproduces the official script. Slice embeddings are computed in batches and shared by all the
boxes of a case.

The model is a PyTorch `KDSam` or an ONNX export's `OnnxPredictor` (fp32 or INT8 encoder): both are
seen through `SliceModel`: what the protocol asks of a model (its frame, slice embeddings, one
box decoded).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from kdsam.infer.prompts import is_ambiguous
from kdsam.models.sam import KDSam

Size = tuple[int, int]  # (height, width)
BOX_MARGIN = 3  # pixels in the model's frame, get_bbox256's bbox_shift


@dataclass
class FramePrompt:
    """Prompts of one slice in the model's frame: clicks (Nx2 x, y; labels 1 object, 0 background),
    an optional box (x0, y0, x1, y1) and an optional 256x256 mask prompt (low-res logits)."""

    points: np.ndarray
    labels: np.ndarray
    box: np.ndarray | None = None
    mask: np.ndarray | None = None

    @property
    def ambiguous(self) -> bool:
        """A lone click with nothing else: SAM's best of three (`kdsam.infer.prompts.is_ambiguous`)."""
        return is_ambiguous(len(self.points), self.box is not None, self.mask is not None)

    def sam_points(self) -> tuple[np.ndarray, np.ndarray]:
        """(1xNx2 coords, 1xN labels) as SAM's ONNX decoder takes them: the box as two corner points
        labelled 2 and 3, else a padding point labelled -1 (what SAM's prompt encoder appends)."""
        extra, extra_labels = (
            (np.asarray(self.box, np.float32).reshape(2, 2), [2.0, 3.0])
            if self.box is not None
            else (np.zeros((1, 2), np.float32), [-1.0])
        )
        coords = np.concatenate([np.asarray(self.points, np.float32).reshape(-1, 2), extra])
        labels = np.concatenate([np.asarray(self.labels, np.float32).reshape(-1), extra_labels])
        return coords[None].astype(np.float32), labels[None].astype(np.float32)


@dataclass
class Decoded:
    """One slice decoded: HxW bool mask at the original size, 256x256 low-res logits, IoU estimate."""

    mask: np.ndarray
    logits: np.ndarray
    score: float


def pick_mask(iou: np.ndarray, ambiguous: bool) -> int:
    """Which of SAM's four outputs (0 single-mask, 1-3 multimask) answers: the best of three for an
    ambiguous prompt, else the single-mask output, as `multimask_output` chooses in SAM."""
    return 1 + int(np.argmax(iou[1:])) if ambiguous else 0


class SliceModel(Protocol):
    """A model as the 3D protocol uses it: its frame, slice embeddings, one frame box decoded."""

    img_size: int
    transform: ResizeLongestSide
    batch_size: int  # slices per encoder call when none is asked for
    workers: int  # slices processed at once (thread-safe calls), 1: one after another

    def embed(self, images: Sequence[np.ndarray]) -> list[Any]:
        """HxW or HxWx3 uint8 slices -> one embedding each (computed as one batch where it helps)."""
        ...

    def decode_box(self, embedding: Any, frame_box: np.ndarray, input_size: Size, original_size: Size) -> np.ndarray:
        """One box already in the model's frame -> HxW bool mask at the original size."""
        ...

    def decode_prompts(self, embedding: Any, prompt: FramePrompt, input_size: Size, original_size: Size) -> Decoded:
        """Clicks, a box and a mask prompt in the model's frame -> the mask at the original size, its
        low-res logits and the decoder's IoU estimate (a lone click: SAM's best of three)."""
        ...


class TorchSlices:
    """`SliceModel` of a PyTorch model: batched encoder calls, the model's own decode and upsampling."""

    def __init__(self, model: KDSam) -> None:
        self.model = model
        self.img_size = model.img_size
        self.transform = model.transform()
        # a GPU wants batches; on a CPU a ResNet-50@256 took 81 ms a slice in batches of 8, 54 ms alone
        self.batch_size = 8 if model.device.type == "cuda" else 1
        self.workers = 1  # torch already spreads each call over its threads

    @torch.no_grad()
    def embed(self, images: Sequence[np.ndarray]) -> list[torch.Tensor]:
        batch = torch.cat([self.model.prepare(image)[0] for image in images])
        return [emb[None].float() for emb in self.model.image_encoder(batch)]

    @torch.no_grad()
    def decode_box(
        self, embedding: torch.Tensor, frame_box: np.ndarray, input_size: Size, original_size: Size
    ) -> np.ndarray:
        box = torch.as_tensor(np.asarray(frame_box, dtype=np.float32).reshape(1, 4), device=embedding.device)
        low_res, _ = self.model.decode(embedding, box)
        masks = self.model.postprocess_masks(low_res, input_size, original_size)
        return (masks[0, 0] > self.model.mask_threshold).cpu().numpy()

    @torch.no_grad()
    def decode_prompts(
        self, embedding: torch.Tensor, prompt: FramePrompt, input_size: Size, original_size: Size
    ) -> Decoded:
        dev = embedding.device
        points = None
        if len(prompt.points):
            coords = torch.as_tensor(np.asarray(prompt.points, np.float32).reshape(1, -1, 2), device=dev)
            points = (coords, torch.as_tensor(np.asarray(prompt.labels).reshape(1, -1), device=dev))
        box = (
            None
            if prompt.box is None
            else torch.as_tensor(np.asarray(prompt.box, np.float32).reshape(1, 4), device=dev)
        )
        mask = (
            None
            if prompt.mask is None
            else torch.as_tensor(np.asarray(prompt.mask, np.float32)[None, None], device=dev)
        )
        sparse, dense = self.model.prompt_encoder(points=points, boxes=box, masks=mask)
        low_res, iou = self.model.mask_decoder.predict_masks(
            embedding, self.model.prompt_encoder.get_dense_pe(), sparse, dense
        )
        k = pick_mask(iou[0].cpu().numpy(), prompt.ambiguous)
        full = self.model.postprocess_masks(low_res[:, k : k + 1], input_size, original_size)
        return Decoded(
            (full[0, 0] > self.model.mask_threshold).cpu().numpy(), low_res[0, k].cpu().numpy(), float(iou[0, k])
        )


def slice_model(model: Any) -> SliceModel:
    """A `KDSam`, or anything with a `slices()` view of itself (an ONNX export's predictor)."""
    return TorchSlices(model) if isinstance(model, KDSam) else model.slices()


class SliceEmbeddings:
    """Image embeddings of the slices of a (D, H, W[, 3]) uint8 stack, computed on first use in
    batches of `batch_size` (the slices about to be needed) and kept for the rest of the case."""

    def __init__(self, model: SliceModel, stack: np.ndarray, batch_size: int | None = None) -> None:
        self.model, self.stack, self.batch_size = model, stack, max(1, batch_size or model.batch_size)
        self.cache: dict[int, Any] = {}
        self.input_size: tuple[int, int] = model.transform.get_preprocess_shape(
            stack.shape[1], stack.shape[2], model.img_size
        )

    def fill(self, zs: Sequence[int], pool: Executor) -> None:
        """Embed the uncached slices of `zs` one per call, as many at once as `pool` runs."""
        todo = [z for z in dict.fromkeys(zs) if z not in self.cache]
        for z, emb in zip(todo, pool.map(lambda z: self.model.embed([self.stack[z]])[0], todo), strict=True):
            self.cache[z] = emb

    def get(self, z: int, upcoming: Sequence[int] = ()) -> Any:
        """The embedding of slice z; computes it with the next uncached `upcoming` ones."""
        if z not in self.cache:
            todo = [z, *[u for u in upcoming if u not in self.cache and u != z][: self.batch_size - 1]]
            for i, emb in zip(todo, self.model.embed([self.stack[i] for i in todo]), strict=True):
                self.cache[i] = emb
        return self.cache[z]


def box_from_neighbour(model: SliceModel, mask: np.ndarray, label: int) -> np.ndarray | None:
    """The neighbour's mask (stored as `label`, as the official script keeps it) resized into the
    model's frame by the model's image transform; its bounding box there widened by BOX_MARGIN and
    clipped to the frame. None when nothing of it survives the resize."""
    labelled = mask.astype(np.uint8) * np.uint8(label)
    small = model.transform.apply_image(labelled)  # grey: the same pixels as the official RGB copy
    ys, xs = np.nonzero(small)
    if len(xs) == 0:
        return None
    side = model.img_size
    return np.array(
        [
            max(0, xs.min() - BOX_MARGIN),
            max(0, ys.min() - BOX_MARGIN),
            min(side, xs.max() + BOX_MARGIN),
            min(side, ys.max() + BOX_MARGIN),
        ],
        dtype=np.float32,
    )


def check_box3d(box: Sequence[float], shape: tuple[int, int, int], where: str) -> tuple[int, ...]:
    """(x0, y0, z0, x1, y1, z1) inclusive voxel indices inside a (D, H, W) stack, else ValueError
    saying which coordinate is wrong (callers add the file name)."""
    x0, y0, z0, x1, y1, z1 = (round(float(v)) for v in box)
    text = ",".join(f"{float(v):g}" for v in box)
    d, h, w = shape
    for name, lo, hi, size in (("x", x0, x1, w), ("y", y0, y1, h), ("z", z0, z1, d)):
        if not 0 <= lo <= hi < size:
            raise ValueError(
                f"{where} {text}: {name} range {lo}..{hi} is not inside 0..{size - 1} "
                f"(voxel indices, inclusive; the volume is {w}x{h}x{d} in x, y, z)"
            )
    return x0, y0, z0, x1, y1, z1


def segment_box3d(
    model: SliceModel,
    embeddings: SliceEmbeddings,
    box: Sequence[int],
    label: int = 1,
    pool: Executor | None = None,
    middle: int | None = None,
) -> np.ndarray:
    """(D, H, W) bool: one 3D box propagated from its middle slice outwards. With a `pool` the
    slices are embedded concurrently first, and the chains up and down from the middle (which depend
    only on the middle slice) run at the same time: the same masks, sooner on several cores.
    `middle`: the slice the 2D box lies on, when it is not the middle of the z range (CVPR25)."""
    stack = embeddings.stack
    d, h, w = stack.shape[:3]
    x0, y0, z0, x1, y1, z1 = box
    out = np.zeros((d, h, w), dtype=bool)
    middle = int((z1 - z0) / 2 + z0) if middle is None else middle
    up, down = list(range(middle + 1, z1 + 1)), list(range(middle - 1, z0 - 1, -1))
    first_box = model.transform.apply_boxes(np.array([[x0, y0, x1, y1]], dtype=np.float32), (h, w))[0]
    if pool is not None:
        embeddings.fill([middle, *up, *down], pool)
    emb = embeddings.get(middle, [*up, *down])
    out[middle] = model.decode_box(emb, first_box, embeddings.input_size, (h, w))

    def chain(zs: list[int], step: int) -> None:
        for n, z in enumerate(zs):
            frame_box = box_from_neighbour(model, out[z - step], label)
            emb = embeddings.get(z, zs[n + 1 :])
            out[z] = model.decode_box(emb, first_box if frame_box is None else frame_box, embeddings.input_size, (h, w))

    if pool is None:
        chain(up, 1)
        chain(down, -1)
    else:
        for done in [pool.submit(chain, up, 1), pool.submit(chain, down, -1)]:
            done.result()
    return out


@contextlib.contextmanager
def slice_workers(model: SliceModel) -> Iterator[Executor | None]:
    """A pool running `model.workers` slices at once (None: one after another). While it runs,
    torch's threads are split among the workers as onnxruntime's are: an export resamples each
    mask with torch inside its worker, and two workers each opening a team of every core's threads
    would oversubscribe the cores."""
    if model.workers <= 1:
        yield None
        return
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // model.workers))
    try:
        with ThreadPoolExecutor(model.workers) as pool:
            yield pool
    finally:
        torch.set_num_threads(before)


def segment_stack(
    model: Any, stack: np.ndarray, boxes: np.ndarray, batch_size: int | None = None, where: str = "box"
) -> np.ndarray:
    """(D, H, W[, 3]) uint8 stack and Nx6 boxes -> (D, H, W) uint8 labels, box i -> i + 1, later over
    earlier. `model`: a KDSam or an ONNX export's predictor (`slice_model`). batch_size: slices per
    encoder call (None: the model's own choice, 8 on a GPU, 1 on a CPU). A model with several
    `workers` (an ONNX export) runs slices concurrently (`segment_box3d`)."""
    checked = [check_box3d(b, stack.shape[:3], where) for b in np.asarray(boxes).reshape(-1, 6)]
    model = slice_model(model)
    embeddings = SliceEmbeddings(model, stack, batch_size)
    labels = np.zeros(stack.shape[:3], dtype=np.uint8)
    with slice_workers(model) as pool:
        for i, box in enumerate(checked, start=1):
            labels[segment_box3d(model, embeddings, box, i, pool)] = i
    return labels
