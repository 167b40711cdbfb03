"""The promptable model every teacher and student is: an official `Sam` that owns its preprocessing.

The 256x64x64 image embedding is the contract. Anything producing it plugs into SAM's prompt
encoder and mask decoder unchanged, so teachers, students and peers share one predictor and one
evaluation. What differs between models is how an image is prepared for the encoder, so that is
stated here, on the model, and nowhere else.
"""

from __future__ import annotations

from copy import deepcopy
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.transforms import ResizeLongestSide

from kdsam.models.transforms import RecipeName, ResizeMode, medsam_upsample, resize_transform

Normalization = Literal["imagenet", "minmax"]


class KDSam(Sam):
    """`segment_anything.modeling.Sam` plus the preprocessing its image encoder was trained with.

    normalization: "imagenet" subtracts SAM's pixel mean and divides by its std (SAM, MobileSAM,
    students); "minmax" scales each image to [0, 1] by its own min and max (MedSAM, LiteMedSAM).
    resize: "longest" resizes the longest side to the encoder size and pads bottom-right (SAM);
    "squash" stretches to a square (MedSAM).
    recipe: whose published inference code the resampling, coordinate rounding and mask
    post-processing follow (see `kdsam.models.transforms`): "sam" (SAM's `SamPredictor`; also
    students, in their teacher's geometry), "medsam" or "litemedsam" (those teachers' scripts).
    card: what the model is and where its weights came from, saved with them (kdsam.models.loading)
    and carried into exports: kind ("teacher"/"student"), a teacher's name, checkpoint and sha256 or
    "weights": "random", a student's backbone, input_size, resize_mode, backbone_init, and the
    volume intensity mapping it was trained with.
    """

    def __init__(
        self,
        sam: Sam,
        *,
        name: str,
        normalization: Normalization = "imagenet",
        resize_mode: ResizeMode = "longest",
        card: dict[str, Any] | None = None,
        recipe: RecipeName = "sam",
    ) -> None:
        super().__init__(
            image_encoder=sam.image_encoder,
            prompt_encoder=sam.prompt_encoder,
            mask_decoder=sam.mask_decoder,
            pixel_mean=sam.pixel_mean.flatten().tolist(),
            pixel_std=sam.pixel_std.flatten().tolist(),
        )
        self.name = name
        self.normalization = normalization
        self.resize_mode = resize_mode
        self.recipe = recipe
        self.card = dict(card or {})

    @property
    def img_size(self) -> int:
        """Side of the square the image encoder reads."""
        return int(self.image_encoder.img_size)

    def transform(self) -> ResizeLongestSide:
        """The image/coordinate transform into this model's encoder frame."""
        return resize_transform(self.resize_mode, self.img_size, self.recipe)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise a resized Bx3xhxw image in [0, 255] and pad it bottom-right to the encoder size."""
        if self.normalization == "imagenet":
            return super().preprocess(x)
        x = x.float()
        flat = x.flatten(1)
        lo = flat.min(dim=1).values.view(-1, 1, 1, 1)
        hi = flat.max(dim=1).values.view(-1, 1, 1, 1)
        x = (x - lo) / (hi - lo).clamp_min(1e-8)
        h, w = x.shape[-2:]
        return F.pad(x, (0, self.img_size - w, 0, self.img_size - h))

    def prepare(self, image: np.ndarray) -> tuple[torch.Tensor, tuple[int, int]]:
        """HxWx3 uint8 RGB, or HxW grey -> (1x3xSxS encoder input on the model's device, resized (h, w)).
        A grey image is resized before it is made RGB: the same pixels (every recipe's resize works
        per channel), a third of the work, which volumes' slices repeat hundreds of times."""
        resized = grey_to_rgb(self.transform().apply_image(np.ascontiguousarray(image)))
        t = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None].float()
        return self.preprocess(t), (int(t.shape[-2]), int(t.shape[-1]))

    def postprocess_masks(
        self, masks: torch.Tensor, input_size: tuple[int, ...], original_size: tuple[int, ...]
    ) -> torch.Tensor:
        """Low-res logits -> logits at the original size, as the model's own inference code upsamples them."""
        if self.recipe == "medsam":
            return medsam_upsample(masks, tuple(original_size))
        return super().postprocess_masks(masks, input_size, original_size)

    @torch.no_grad()
    def embed(self, image: np.ndarray) -> torch.Tensor:
        """One image -> its 1x256x64x64 embedding."""
        x, _ = self.prepare(image)
        return self.image_encoder(x)

    def boxes_to_prompt_frame(self, boxes: torch.Tensor, original_size: tuple[int, int]) -> torch.Tensor:
        """Nx4 XYXY boxes in original pixels -> the frame the prompt encoder expects."""
        return self.transform().apply_boxes_torch(boxes.double(), original_size).float()

    def decode(
        self,
        embeddings: torch.Tensor,
        boxes: torch.Tensor,
        multimask_output: bool = False,
        batched: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Bx256x64x64 embeddings and Bx4 prompt-frame boxes (one per embedding) -> low-res logits, IoU."""
        sparse, dense = self.prompt_encoder(points=None, boxes=boxes[:, None, :], masks=None)
        return self.decode_prompts(embeddings, sparse, dense, multimask_output, batched)

    def decode_prompts(
        self,
        embeddings: torch.Tensor,
        sparse: torch.Tensor,
        dense: torch.Tensor,
        multimask_output: bool = False,
        batched: bool | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The mask decoder for B images, each with its own encoded prompts (B sparse, B dense).

        SAM's mask decoder pairs all its prompts with one image, so B images take B decoder calls.
        `batched` (default: on CUDA) runs them as one call under `vmap`, with the same numbers: on a
        GPU the loop is launch-bound, on a CPU the loop is the faster (docs/training.md)."""
        image_pe = self.prompt_encoder.get_dense_pe()

        def one(embedding: torch.Tensor, sparse: torch.Tensor, dense: torch.Tensor):
            masks, iou = self.mask_decoder(
                image_embeddings=embedding[None],
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse[None],
                dense_prompt_embeddings=dense[None],
                multimask_output=multimask_output,
            )
            return masks[0], iou[0]

        if embeddings.is_cuda if batched is None else batched:
            return torch.func.vmap(one)(embeddings, sparse, dense)
        masks, iou = zip(*map(one, embeddings, sparse, dense), strict=True)
        return torch.stack(masks), torch.stack(iou)


def grey_to_rgb(image: np.ndarray) -> np.ndarray:
    """HxW -> HxWx3 by repeating the grey channel (as the official scripts do); HxWx3 unchanged."""
    return np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image


def sam_heads(input_size: int) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and mask decoder (shared by every SAM-family model) for a given frame."""
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(input_size, input_size), mask_in_chans=16
    )
    mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
        transformer_dim=256,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return prompt_encoder, mask_decoder


def with_prompt_frame(sam: Sam, img_size: int) -> tuple[Any, Any]:
    """Copies of a model's prompt encoder and mask decoder for an encoder of another input size.

    Coordinates are normalised by the prompt encoder's input size, so re-stating that size is all a
    student at another resolution needs; the learned weights are the teacher's, untouched.
    """
    prompt_encoder = deepcopy(sam.prompt_encoder)
    prompt_encoder.input_image_size = (img_size, img_size)
    prompt_encoder.mask_input_size = tuple(4 * s for s in prompt_encoder.image_embedding_size)
    return prompt_encoder, deepcopy(sam.mask_decoder)
