"""A tiny official `Sam` (random, seeded): a small ViT encoder that still yields the 256x64x64 embedding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from kdsam.data.synthetic import synthesize
from kdsam.models.sam import KDSam
from kdsam.models.teachers import load_teacher

TINY_SIZE = 256


def tiny_heads(img_size: int = TINY_SIZE) -> tuple[PromptEncoder, MaskDecoder]:
    """SAM's prompt encoder and a one-layer, narrow mask decoder: the same code paths as SAM's heads
    (which take ~1 s a call on a busy 2-core machine) at a quarter of the cost."""
    prompt_encoder = PromptEncoder(
        embed_dim=256, image_embedding_size=(64, 64), input_image_size=(img_size, img_size), mask_in_chans=16
    )
    transformer = TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=256, num_heads=8)
    mask_decoder = MaskDecoder(transformer_dim=256, transformer=transformer, iou_head_hidden_dim=64)
    return prompt_encoder, mask_decoder


def tiny_sam(seed: int = 0, img_size: int = TINY_SIZE) -> Sam:
    """ImageEncoderViT with img_size/64 px patches (64x64 tokens), a windowed block and a global one,
    relative positions on: every code path of SAM's encoder, at a fraction of ViT-B's cost."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=img_size,
        patch_size=img_size // 64,
        embed_dim=32,
        depth=2,
        num_heads=2,
        mlp_ratio=2.0,
        out_chans=256,
        qkv_bias=True,
        use_rel_pos=True,
        window_size=8,
        global_attn_indexes=(1,),
    )
    prompt_encoder, mask_decoder = tiny_heads(img_size)
    return Sam(image_encoder=encoder, prompt_encoder=prompt_encoder, mask_decoder=mask_decoder).eval()


@pytest.fixture(scope="session")
def tiny() -> Sam:
    """Shared: tests that change weights must deepcopy it first."""
    return tiny_sam()


@pytest.fixture(scope="session")
def litemedsam() -> KDSam:
    """The default teacher with its real, bundled weights (shared: never modify it)."""
    return load_teacher("litemedsam")


@pytest.fixture(scope="session")
def polyp() -> tuple[np.ndarray, np.ndarray]:
    """A synthetic polyp image (about 300x350) and its mask."""
    return synthesize("polyp", 0)


class RecordingEncoder(torch.nn.Module):
    """Stands in for an image encoder where only its input matters: keeps the last input and returns a
    cheap embedding that depends on it (pooled to 64x64, channels tiled to 256)."""

    def __init__(self, img_size: int) -> None:
        super().__init__()
        self.img_size = img_size
        self.last_input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.last_input = x.detach().clone()
        return torch.nn.functional.adaptive_avg_pool2d(x, 64).repeat(1, 86, 1, 1)[:, :256]


def recording_sam(img_size: int = TINY_SIZE) -> Sam:
    """A `Sam` whose encoder is a RecordingEncoder: for tests of preprocessing, not of networks."""
    prompt_encoder, mask_decoder = tiny_heads(img_size)
    return Sam(image_encoder=RecordingEncoder(img_size), prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
