"""Image and coordinate transforms into an encoder's frame, one per inference recipe.

Each is a `segment_anything` `ResizeLongestSide` (apply_image / apply_coords / apply_boxes and their
torch twins), so the official `SamPredictor` and kdsam's batched teacher path use them unchanged.

- "sam" (SAM, MobileSAM; students): SAM's own `ResizeLongestSide`, or `SquashResize` for a student
  that follows MedSAM's square geometry.
- "litemedsam": CVPR24_LiteMedSAM_infer.py, `resize_longest_side` and `resize_box_to_256`.
- "medsam": MedSAM_Inference.py, its "image preprocessing" and box scaling, plus `medsam_upsample`
  for its post-processing (sigmoid first, then one upsample).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.utils.transforms import ResizeLongestSide
from skimage.transform import resize as skimage_resize

ResizeMode = Literal["longest", "squash"]
RecipeName = Literal["sam", "medsam", "litemedsam"]


def _per_image(fn: Callable[[np.ndarray], np.ndarray], images: torch.Tensor) -> torch.Tensor:
    """A numpy image function applied to each image of a BxCxHxW tensor (not differentiable)."""
    out = [fn(np.ascontiguousarray(x.permute(1, 2, 0).cpu().numpy())) for x in images.detach()]
    return torch.stack([torch.as_tensor(np.asarray(o)).permute(2, 0, 1) for o in out]).to(images)


class SquashResize(ResizeLongestSide):
    """Resize to a square, ignoring aspect ratio (MedSAM's geometry), with SAM's transform API."""

    @staticmethod
    def get_preprocess_shape(oldh: int, oldw: int, long_side_length: int) -> tuple[int, int]:
        return long_side_length, long_side_length

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        size = (self.target_length, self.target_length)
        return F.interpolate(image, size, mode="bilinear", align_corners=False, antialias=True)


class LiteMedSAMResize(ResizeLongestSide):
    """LiteMedSAM's official resize: longest side to the target with OpenCV's area filter, sizes
    rounded like SAM's (int(side * scale + 0.5)); coordinates scaled by target / max(H, W), and box
    corners truncated to integers (`int(c * ratio)`), all in float64 as the script does."""

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        h, w = self.get_preprocess_shape(image.shape[0], image.shape[1], self.target_length)
        return cv2.resize(np.ascontiguousarray(image), (w, h), interpolation=cv2.INTER_AREA)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return np.asarray(coords, dtype=np.float64) * (self.target_length / max(original_size[:2]))

    def apply_boxes(self, boxes: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        return np.trunc(self.apply_coords(boxes, original_size)).reshape(-1, 4)

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        return _per_image(self.apply_image, image)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        return _numpy_coords(self.apply_coords, coords, original_size)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        return _numpy_coords(self.apply_boxes, boxes, original_size)


class MedSAMResize(SquashResize):
    """MedSAM's official resize: scikit-image's order-3 spline to a square with anti-aliasing and the
    input's range preserved, cast (truncated) back to uint8; coordinates divided by (W, H) then
    multiplied by the target, in float64, no rounding."""

    def apply_image(self, image: np.ndarray) -> np.ndarray:
        size = (self.target_length, self.target_length)
        return skimage_resize(image, size, order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)

    def apply_coords(self, coords: np.ndarray, original_size: tuple[int, ...]) -> np.ndarray:
        h, w = original_size[:2]
        return np.asarray(coords, dtype=np.float64) / np.array([w, h]) * self.target_length

    def apply_image_torch(self, image: torch.Tensor) -> torch.Tensor:
        return _per_image(self.apply_image, image)

    def apply_coords_torch(self, coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        return _numpy_coords(self.apply_coords, coords, original_size)

    def apply_boxes_torch(self, boxes: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
        return _numpy_coords(self.apply_boxes, boxes, original_size)


def _numpy_coords(fn: Callable[..., np.ndarray], coords: torch.Tensor, original_size: tuple[int, ...]) -> torch.Tensor:
    """Run a float64 numpy coordinate transform on a tensor; float32 out, like SAM's torch transforms."""
    out = fn(coords.detach().cpu().double().numpy(), original_size)
    return torch.as_tensor(out, dtype=torch.float, device=coords.device)


def resize_transform(resize_mode: ResizeMode, size: int, recipe: RecipeName = "sam") -> ResizeLongestSide:
    """The image/coordinate transform into an encoder frame of side `size`."""
    if recipe == "litemedsam":
        return LiteMedSAMResize(size)
    if recipe == "medsam":
        return MedSAMResize(size)
    return (SquashResize if resize_mode == "squash" else ResizeLongestSide)(size)


def medsam_upsample(low_res_logits: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
    """MedSAM's post-processing, returned as logits: sigmoid on the 256x256 logits, ONE bilinear
    upsample to the original size, then back to logits so that `> 0` is MedSAM's `> 0.5`."""
    probs = F.interpolate(torch.sigmoid(low_res_logits), original_size, mode="bilinear", align_corners=False)
    return torch.logit(probs)
