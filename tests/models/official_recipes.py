"""Each teacher's published inference recipe, re-implemented step by step from its script, to test
kdsam against. Nothing here imports kdsam's preprocessing: only numpy, OpenCV, scikit-image, torch
and the official `segment_anything` modules, so a test comparing the two can fail.

Run as a script to measure kdsam's LiteMedSAM against its official recipe on real photos (JSON):
    python tests/models/official_recipes.py
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from skimage import data, transform

# Real photos bundled with scikit-image, none square, so rounding and padding matter; coins is grey.
# Boxes (XYXY, original pixels) around things in them.
PHOTOS: dict[str, tuple[np.ndarray, np.ndarray]] = {
    "chelsea": (data.chelsea(), np.array([[140, 40, 330, 250], [270, 15, 345, 110], [40, 10, 440, 295]])),
    "coffee": (data.coffee(), np.array([[80, 20, 560, 370], [40, 200, 590, 395], [190, 60, 450, 200]])),
    "rocket": (data.rocket(), np.array([[290, 25, 375, 335], [0, 330, 640, 427], [420, 150, 600, 330]])),
    "coins": (data.coins(), np.array([[15, 10, 80, 72], [147, 98, 243, 191], [297, 217, 377, 297]])),
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1 when both are empty (they agree)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def three_channels(image: np.ndarray) -> np.ndarray:
    """Both scripts: a greyscale image is repeated to 3 channels (`np.repeat(img[:, :, None], 3, axis=-1)`)."""
    return np.repeat(image[:, :, None], 3, axis=-1) if image.ndim == 2 else image


def _decode(sam: Sam, embedding: torch.Tensor, box: np.ndarray) -> torch.Tensor:
    """Both scripts: the box as a 1x1x4 float tensor, prompt encoder, mask decoder with one mask -> 1x1x256x256."""
    box_t = torch.as_tensor(box, dtype=torch.float).reshape(1, 1, 4)
    sparse, dense = sam.prompt_encoder(points=None, boxes=box_t, masks=None)
    logits, _ = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return logits


def litemedsam_input(image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
    """CVPR24_LiteMedSAM_infer.py (LiteMedSAM branch), `resize_longest_side`, `pad_image` and the
    preprocessing of `MedSAM_infer_npz_2D`: scale = 256 / max(H, W); new size int(side * scale + 0.5);
    cv2.resize(..., INTER_AREA) on the uint8 image; min-max over the resized image (float64, denominator
    clipped at 1e-8); zero padding bottom-right to 256x256; torch .float(), HWC -> 1x3x256x256."""
    img = three_channels(image)
    h, w = img.shape[:2]
    scale = 256 * 1.0 / max(h, w)
    new_w, new_h = int(w * scale + 0.5), int(h * scale + 0.5)
    img_256 = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    padded = np.pad(norm, ((0, 256 - new_h), (0, 256 - new_w), (0, 0)))
    return torch.tensor(padded).float().permute(2, 0, 1).unsqueeze(0), (new_h, new_w)


def litemedsam_box(box: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """CVPR24_LiteMedSAM_infer.py, `resize_box_to_256`: ratio = 256 / max(H, W); each coordinate int(c * ratio)."""
    new_box = np.zeros_like(box)
    ratio = 256 / max(original_size)
    for i in range(len(box)):
        new_box[i] = int(box[i] * ratio)
    return new_box


@torch.no_grad()
def litemedsam_official(
    sam: Sam, image: np.ndarray, boxes: np.ndarray, embedding: torch.Tensor | None = None
) -> list[np.ndarray]:
    """CVPR24_LiteMedSAM_infer.py, `MedSAM_infer_npz_2D` and `medsam_inference`: one embedding, then per
    box: decode, `postprocess_masks` (crop the 256x256 logits to the resized size, bilinear
    align_corners=False to (H, W)), sigmoid, > 0.5. `embedding`: the encoder's output for
    `litemedsam_input(image)` when already at hand (the encoder is deterministic)."""
    h, w = image.shape[:2]
    x, new_size = litemedsam_input(image)
    if embedding is None:
        embedding = sam.image_encoder(x)
    masks = []
    for box in boxes:
        logits = _decode(sam, embedding, litemedsam_box(box, (h, w))[None])
        logits = logits[..., : new_size[0], : new_size[1]]
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        masks.append(torch.sigmoid(logits).squeeze().numpy() > 0.5)
    return masks


def medsam_input(image: np.ndarray) -> torch.Tensor:
    """MedSAM_Inference.py, "image preprocessing": skimage.transform.resize to 1024x1024 (order=3,
    preserve_range=True, anti_aliasing=True) then .astype(np.uint8); min-max over the image (float64,
    denominator clipped at 1e-8); torch .float(), HWC -> 1x3x1024x1024 (no padding)."""
    img = three_channels(image)
    img_1024 = transform.resize(img, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    norm = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    return torch.tensor(norm).float().permute(2, 0, 1).unsqueeze(0)


def medsam_box(box: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """MedSAM_Inference.py: box_1024 = box_np / np.array([W, H, W, H]) * 1024 (floats, no rounding)."""
    h, w = original_size
    return box / np.array([w, h, w, h]) * 1024


def medsam_masks(logits: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """MedSAM_Inference.py, `medsam_inference`: sigmoid on the 256x256 logits, ONE bilinear
    (align_corners=False) upsample to (H, W), > 0.5."""
    probs = F.interpolate(torch.sigmoid(logits), size=original_size, mode="bilinear", align_corners=False)
    return probs.squeeze().numpy() > 0.5


@torch.no_grad()
def medsam_official(
    sam: Sam, image: np.ndarray, boxes: np.ndarray, embedding: torch.Tensor | None = None
) -> list[np.ndarray]:
    """MedSAM_Inference.py end to end for each box (one embedding per image; `embedding` as for
    `litemedsam_official`)."""
    h, w = image.shape[:2]
    if embedding is None:
        embedding = sam.image_encoder(medsam_input(image))
    return [medsam_masks(_decode(sam, embedding, medsam_box(box, (h, w))), (h, w)) for box in boxes]


def main() -> None:
    """Per-box Dice of kdsam's LiteMedSAM predictor against the official recipe, as JSON."""
    from kdsam.models.teachers import load_teacher
    from kdsam.predictor import KDSamPredictor

    teacher = load_teacher("litemedsam")
    predictor = KDSamPredictor(teacher)
    result = {}
    for name, (image, boxes) in PHOTOS.items():
        predictor.set_image(image)
        ours = predictor.predict_boxes(boxes)[0][:, 0]
        want = litemedsam_official(teacher, image, boxes)
        result[name] = [round(dice(a, b), 4) for a, b in zip(ours, want, strict=True)]
    flat = [d for v in result.values() for d in v]
    print(json.dumps({"teacher": "litemedsam", "dice_per_box": result, "min": min(flat), "mean": float(np.mean(flat))}))


if __name__ == "__main__":
    main()
