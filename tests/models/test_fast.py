"""optimize_for_inference is idempotent: a second call replaces its setup instead of stacking hooks."""

from __future__ import annotations

import torch

from kdsam.models.fast import VARIANTS, optimize_for_inference
from kdsam.models.student import build_student


def _hooks(module: torch.nn.Module) -> tuple[int, int]:
    return len(module._forward_pre_hooks), len(module._forward_hooks)


def test_second_call_replaces_the_first() -> None:
    torch.manual_seed(0)
    model = build_student(None, "resnet18", 64).eval()
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        want = model.image_encoder(x)
    optimize_for_inference(model, "cpu")
    once = _hooks(model.image_encoder)
    assert once == (1, 1)
    optimize_for_inference(model, "cpu")
    optimize_for_inference(model, "cpu", VARIANTS["baseline"])
    assert _hooks(model.image_encoder) == once
    assert "forward" not in model.image_encoder.__dict__  # baseline: no inference_mode wrapper left over
    torch.testing.assert_close(model.image_encoder(x), want, rtol=1e-4, atol=1e-4)
    optimize_for_inference(model, "cpu")
    assert _hooks(model.image_encoder) == once and "forward" in model.image_encoder.__dict__
    torch.testing.assert_close(model.image_encoder(x), want, rtol=1e-4, atol=1e-4)
