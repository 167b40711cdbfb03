"""The official CVPR24 LiteMedSAM inference, re-implemented step by step as the reference kdsam must match.

Source: bowang-lab/MedSAM, branch LiteMedSAM, CVPR24_LiteMedSAM_infer.py: resize_longest_side
(cv2.INTER_AREA, sides int(side * 256 / max + 0.5)), min-max normalisation after the resize, pad_image
(bottom-right zeros to 256), resize_box_to_256 (int(c * 256 / max(H, W))), get_bbox256 (mask
bounding box +-3 px, clipped to 256), medsam_inference (prompt encoder + mask decoder, single mask,
crop to the resized size, bilinear to the original, sigmoid > 0.5), MedSAM_infer_npz_2D (one
embedding, boxes in order, label idx overwrites) and MedSAM_infer_npz_3D (middle slice
int((z_max - z_min) / 2 + z_min) up to z_max, then down to z_min, each slice's box from its
neighbour's mask resized to 256, the 2D box when that is empty). Only the model's modules are
shared with kdsam; none of kdsam's transforms is used here.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

SIDE = 256


def resize_longest_side(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    scale = SIDE / max(h, w)
    return cv2.resize(image, (int(w * scale + 0.5), int(h * scale + 0.5)), interpolation=cv2.INTER_AREA)


def pad_image(image: np.ndarray) -> np.ndarray:
    pad = ((0, SIDE - image.shape[0]), (0, SIDE - image.shape[1]))
    return np.pad(image, pad + ((0, 0),) * (image.ndim - 2))


@torch.no_grad()
def embed(model, img_3c: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    small = resize_longest_side(img_3c)
    norm = (small - small.min()) / np.clip(small.max() - small.min(), 1e-8, None)
    tensor = torch.tensor(pad_image(norm)).float().permute(2, 0, 1)[None]
    return model.image_encoder(tensor), small.shape[:2]


def box_to_256(box: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    ratio = SIDE / max(original_size)
    out = np.zeros_like(box)
    for i in range(len(box)):
        out[i] = int(box[i] * ratio)
    return out


def bbox256(mask_256: np.ndarray, shift: int = 3) -> np.ndarray:
    ys, xs = np.where(mask_256 > 0)
    h, w = mask_256.shape
    return np.array(
        [max(0, xs.min() - shift), max(0, ys.min() - shift), min(w, xs.max() + shift), min(h, ys.max() + shift)]
    )


@torch.no_grad()
def infer(model, embedding: torch.Tensor, box_256: np.ndarray, new_size, original_size) -> np.ndarray:
    box = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)
    sparse, dense = model.prompt_encoder(points=None, boxes=box, masks=None)
    logits, _ = model.mask_decoder(
        image_embeddings=embedding,
        image_pe=model.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    logits = F.interpolate(
        logits[..., : new_size[0], : new_size[1]], size=tuple(original_size), mode="bilinear", align_corners=False
    )
    return (torch.sigmoid(logits).squeeze().numpy() > 0.5).astype(np.uint8)


def official_2d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    h, w = imgs.shape[:2]
    segs = np.zeros((h, w), np.uint8)
    embedding, new_size = embed(model, imgs)
    for idx, box in enumerate(boxes, start=1):
        mask = infer(model, embedding, box_to_256(box, (h, w))[None], new_size, (h, w))
        segs[mask > 0] = idx
    return segs


def official_3d(model, imgs: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    segs = np.zeros_like(imgs, dtype=np.uint8)
    h, w = imgs.shape[1:]
    for idx, (x_min, y_min, z_min, x_max, y_max, z_max) in enumerate(boxes, start=1):
        temp = np.zeros_like(imgs, dtype=np.uint8)
        box_2d = np.array([x_min, y_min, x_max, y_max])
        z_middle = int((z_max - z_min) / 2 + z_min)
        upward = range(z_middle, min(z_max + 1, imgs.shape[0]))
        downward = range(z_middle - 1, max(-1, z_min - 1), -1)
        for z in [*upward, *downward]:
            embedding, new_size = embed(model, np.repeat(imgs[z][..., None], 3, axis=-1))
            box = box_to_256(box_2d, (h, w))
            if z != z_middle:
                previous = resize_longest_side(temp[z - 1 if z > z_middle else z + 1])
                if previous.max() > 0:
                    box = bbox256(pad_image(previous))
            temp[z, infer(model, embedding, box, new_size, (h, w)) > 0] = idx
        segs[temp > 0] = idx
    return segs
