"""A tiny teacher and training settings: the distillation tests take seconds, not minutes."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, Sam

from kdsam.distill.trainer import FitConfig
from kdsam.models.sam import KDSam, sam_heads

FAST = FitConfig(epochs=2, lr=1e-3, batch_size=4, seed=0)
STUDENT = {"backbone": "resnet18", "input_size": 64}


class CountingEncoder(torch.nn.Module):
    """Wraps an encoder and counts forwards, to prove the cache keeps the teacher from running twice."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.img_size = inner.img_size
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += x.shape[0]
        return self.inner(x)


def make_tiny_teacher(seed: int = 0) -> KDSam:
    """A randomly initialised SAM (official modules) with a one-block ViT reading 128 px images."""
    torch.manual_seed(seed)
    encoder = ImageEncoderViT(
        img_size=128, patch_size=2, embed_dim=16, depth=1, num_heads=1, out_chans=256, window_size=8
    )
    prompt_encoder, mask_decoder = sam_heads(128)
    sam = Sam(image_encoder=CountingEncoder(encoder), prompt_encoder=prompt_encoder, mask_decoder=mask_decoder)
    model = KDSam(sam, name="tiny", card={"kind": "teacher", "name": "tiny", "sha256": f"seed{seed}"})
    return model.eval().requires_grad_(False)


@contextlib.contextmanager
def cut_after_checkpoint(n: int) -> Iterator[None]:
    """The training inside stops like a Ctrl-C or a pre-emption, right after its n-th checkpoint
    is written; the interrupt is expected and swallowed."""
    import kdsam.distill.trainer as trainer

    real, written = trainer.save_torch, [0]

    def save_then_stop(path, obj) -> None:
        real(path, obj)
        written[0] += 1
        if written[0] == n:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp, pytest.raises(KeyboardInterrupt):
        mp.setattr(trainer, "save_torch", save_then_stop)
        yield
