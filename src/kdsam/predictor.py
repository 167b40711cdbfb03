"""`KDSamPredictor`: the official `SamPredictor` API for every kdsam model, teacher or student;
`Predictor`: what it and an ONNX export's `OnnxPredictor` both do, so callers never ask which."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch
from segment_anything import SamPredictor

from kdsam.data import intensity
from kdsam.models.sam import KDSam


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """Greyscale (HxW or HxWx1), RGBA and 16-bit arrays -> HxWx3 uint8, as SAM's predictor expects."""
    image = np.asarray(image)
    if image.size == 0:
        raise ValueError(f"the image is empty (shape {image.shape}); expected an HxW or HxWxC array with pixels")
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")
    image = image[..., :3]
    if image.dtype != np.uint8:  # min-max over the image, as a 16-bit file is read (scanner ranges vary)
        image = intensity.to_uint8(image, "minmax")[0]
    return np.repeat(image, 3, axis=2) if image.shape[2] == 1 else np.ascontiguousarray(image)


@runtime_checkable
class Predictor(Protocol):
    """A model ready to segment one image at a time: `KDSamPredictor` (torch) and `OnnxPredictor`.

    Coordinates are in the original image's pixels; H x W is the size of the image set.
    """

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Embed an HxWx3 uint8 image (grey, RGBA and 16-bit arrays are converted first)."""
        ...

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One object (Nx2 clicks, N labels, a 4 XYXY box, a 1x256x256 mask prompt) -> masks CxHxW,
        scores C, low-res logits Cx256x256; C = 3 with multimask_output else 1."""
        ...

    def predict_boxes(
        self, boxes: np.ndarray, multimask_output: bool = False, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Nx4 XYXY boxes -> masks NxCxHxW, scores NxC, low-res logits NxCx256x256."""
        ...


class KDSamPredictor(SamPredictor):
    """Drop-in `segment_anything.SamPredictor` for a `KDSam` model.

    Same methods, shapes and dtypes (set_image, set_torch_image, predict, predict_torch,
    get_image_embedding, reset_image); the only difference is that images are resized the way the
    model was trained (e.g. MedSAM squashes to a square). Adds `predict_boxes` for many boxes at once.
    Masks come out as the model's own inference code makes them (MedSAM: sigmoid, then one upsample).

    Arguments:
      model (KDSam): any kdsam model, teacher or student (`kdsam.load_model`).

    Example:
      predictor = KDSamPredictor(load_model("run/"))
      predictor.set_image(image)                      # HxWx3 uint8
      masks, scores, low_res = predictor.predict_boxes(np.array([[10, 20, 120, 90]]))
    """

    def __init__(self, model: KDSam) -> None:
        super().__init__(model)
        self.transform = model.transform()

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute the image's embedding, which every later `predict`/`predict_boxes` call reuses.

        Arguments:
          image (np.ndarray): HxWx3 uint8 in pixel values [0, 255]; HxW or HxWx1 grey, HxWx4 RGBA
            (alpha dropped) and 16-bit or float arrays (min-max scaled) are converted first.
          image_format (str): "RGB" or "BGR", the channel order of `image`.

        Raises:
          ValueError: an empty image or one of another shape.
        """
        super().set_image(as_rgb_uint8(image), image_format)

    @torch.no_grad()
    def predict_boxes(
        self, boxes: np.ndarray, multimask_output: bool = False, return_logits: bool = False
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Masks for many boxes at once on the image set (SAM's `predict` takes a single box).

        Arguments:
          boxes (np.ndarray): Nx4 (or 4) XYXY boxes in the image's pixels. No boxes (a 0x4 array)
            give empty arrays of the shapes below with N = 0, not an error.
          multimask_output (bool): return SAM's three masks per box instead of one.
          return_logits (bool): return logits instead of masks thresholded at `mask_threshold`.

        Returns:
          (np.ndarray): masks NxCxHxW, bool (float32 logits with return_logits), C = 3 with
            multimask_output else 1, H and W those of the image set.
          (np.ndarray): scores NxC, the decoder's IoU estimates.
          (np.ndarray): low-res logits NxCx256x256, usable as a later `mask_input`.

        Raises:
          RuntimeError: no image has been set.
          ValueError: `boxes` of another shape.
        """
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.size == 0:
            boxes = boxes.reshape(0, 4)
        elif boxes.shape == (4,):
            boxes = boxes[None]
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes must be an Nx4 array of XYXY corners, got shape {boxes.shape}")
        if not len(boxes):
            c = 3 if multimask_output else 1
            masks = np.zeros((0, c, *self.original_size), dtype=np.float32 if return_logits else bool)
            return masks, np.zeros((0, c), np.float32), np.zeros((0, c, 256, 256), np.float32)
        box_t = self.transform.apply_boxes(boxes, self.original_size)
        box_t = torch.as_tensor(box_t, dtype=torch.float, device=self.device)
        masks, scores, low_res = self.predict_torch(
            None, None, box_t, multimask_output=multimask_output, return_logits=return_logits
        )
        return masks.cpu().numpy(), scores.cpu().numpy(), low_res.cpu().numpy()

    def segment(self, boxes: np.ndarray) -> np.ndarray:
        """HxW bool: the union of the single-mask predictions for Nx4 XYXY `boxes` (empty if none)."""
        if len(boxes) == 0:
            return np.zeros(self.original_size, dtype=bool)
        masks, _, _ = self.predict_boxes(boxes)
        return masks[:, 0].any(axis=0)


def predictor_of(model: KDSam | Predictor) -> Predictor:
    """A `KDSam`'s `KDSamPredictor`; a `Predictor` (an ONNX export's `OnnxPredictor`) is one already."""
    return KDSamPredictor(model) if isinstance(model, KDSam) else model
