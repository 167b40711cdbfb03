"""The official CVPR24 LiteMedSAM npz inference, re-implemented step by step as the reference kdsam must match.

Source: bowang-lab/MedSAM, branch LiteMedSAM, CVPR24_LiteMedSAM_infer.py. The 2D steps (resize, min-max,
padding, box scaling, decoding, post-processing) are those of tests/models/official_recipes.py; added
here: MedSAM_infer_npz_2D's label map (boxes in order, label idx overwrites) and MedSAM_infer_npz_3D
(middle slice int((z_max - z_min) / 2 + z_min) up to z_max, then down to z_min; each slice's box from
its neighbour's mask resized with `resize_longest_side` (cv2.INTER_AREA on the label-valued uint8
mask), padded to 256, `get_bbox256` (bounding box +-3 px clipped to 256); the 2D box when that mask
is empty). Only the model's modules are shared with kdsam; none of kdsam's transforms is used here.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from tests.models.official_recipes import _decode, litemedsam_box, litemedsam_input, litemedsam_official

SIDE = 256


def official_2d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    segs = np.zeros(imgs.shape[:2], np.uint8)
    for idx, mask in enumerate(litemedsam_official(model, imgs, boxes), start=1):
        segs[mask] = idx
    return segs


def resize_mask(mask: np.ndarray) -> np.ndarray:
    h, w = mask.shape
    scale = SIDE / max(h, w)
    small = cv2.resize(mask, (int(w * scale + 0.5), int(h * scale + 0.5)), interpolation=cv2.INTER_AREA)
    return np.pad(small, ((0, SIDE - small.shape[0]), (0, SIDE - small.shape[1])))


def bbox256(mask_256: np.ndarray, shift: int = 3) -> np.ndarray:
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array(
        [max(0, xs.min() - shift), max(0, ys.min() - shift), min(w, xs.max() + shift), min(h, ys.max() + shift)]
    )


@torch.no_grad()
def slice_mask(
    model, image: np.ndarray, box_256: np.ndarray, embeddings: dict[int, torch.Tensor], z: int
) -> np.ndarray:
    """The script re-embeds a slice for every box; the encoder is deterministic, so each slice's
    embedding is computed once here (`embeddings`, by slice index) to keep the test fast."""
    x, new_size = litemedsam_input(image)
    if z not in embeddings:
        embeddings[z] = model.image_encoder(x)
    logits = _decode(model, embeddings[z], box_256)[..., : new_size[0], : new_size[1]]
    logits = F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False)
    return torch.sigmoid(logits).squeeze().numpy() > 0.5


def official_3d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    segs = np.zeros_like(imgs, dtype=np.uint8)
    embeddings: dict[int, torch.Tensor] = {}
    for idx, (x_min, y_min, z_min, x_max, y_max, z_max) in enumerate(boxes, start=1):
        temp = np.zeros_like(imgs, dtype=np.uint8)
        box_2d = litemedsam_box(np.array([x_min, y_min, x_max, y_max]), imgs.shape[1:])
        z_middle = int((z_max - z_min) / 2 + z_min)
        upward = range(z_middle, min(z_max + 1, imgs.shape[0]))
        downward = range(z_middle - 1, max(-1, z_min - 1), -1)
        for z in [*upward, *downward]:
            box = box_2d
            if z != z_middle:
                previous = resize_mask(temp[z - 1 if z > z_middle else z + 1])
                if previous.max() > 0:
                    box = bbox256(previous)
            temp[z, slice_mask(model, imgs[z], box, embeddings, z)] = idx
        segs[temp > 0] = idx
    return segs
