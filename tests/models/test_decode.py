"""A batch of images, one box each, decodes to the same logits and gradients whether SAM's mask
decoder runs once per image (the CPU path) or once for the batch under vmap (the CUDA path)."""

from __future__ import annotations

import pytest
import torch

from tests.distill.tiny import make_tiny_teacher


@pytest.mark.parametrize("multimask", [False, True])
def test_batched_decode_matches_one_call_per_image(multimask: bool) -> None:
    model = make_tiny_teacher()
    torch.manual_seed(0)
    embeddings = torch.randn(3, 256, 64, 64)
    boxes = torch.tensor([[5.0, 8.0, 60.0, 90.0], [0.0, 0.0, 127.0, 127.0], [30.0, 40.0, 50.0, 45.0]])
    results = {}
    for batched in (False, True):
        emb = embeddings.clone().requires_grad_(True)
        masks, iou = model.decode(emb, boxes, multimask_output=multimask, batched=batched)
        (masks.square().mean() + iou.sum()).backward()
        results[batched] = (masks, iou, emb.grad)
    assert results[True][0].shape == (3, 3 if multimask else 1, 256, 256)
    for looped, batched in zip(results[False], results[True], strict=True):
        assert torch.allclose(looped, batched, rtol=1e-4, atol=1e-5)
    assert not torch.equal(results[True][0][0], results[True][0][1])  # each image got its own box
