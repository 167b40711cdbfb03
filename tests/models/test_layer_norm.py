"""kdsam's LayerNorm2d is SAM's, computed in one op: same parameters, same numbers."""

from __future__ import annotations

import pytest
import torch
from segment_anything.modeling.common import LayerNorm2d as SamLayerNorm2d
from torch import nn

from kdsam.models.layer_norm import LayerNorm2d, fused_layer_norms


def _pair(channels: int = 16) -> tuple[SamLayerNorm2d, LayerNorm2d]:
    torch.manual_seed(0)
    sam = SamLayerNorm2d(channels)
    nn.init.normal_(sam.weight)
    nn.init.normal_(sam.bias)
    ours = LayerNorm2d(channels)
    ours.load_state_dict(sam.state_dict())  # same keys: students saved before it load unchanged
    return sam, ours


@pytest.mark.parametrize("channels_last", [False, True])
def test_it_gives_sam_layer_norm2d_numbers(channels_last: bool) -> None:
    sam, ours = _pair()
    x = torch.randn(2, 16, 9, 7) * 3 + 1
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(ours(x), sam(x), atol=2e-6, rtol=1e-5)
    (ours(x) ** 2).sum().backward()  # trainable, as the students' neck is
    assert ours.weight.grad is not None and ours.weight.grad.abs().sum() > 0


def test_fused_layer_norms_switches_sam_modules_and_switches_them_back() -> None:
    sam, _ = _pair()
    model = nn.Sequential(nn.Conv2d(3, 16, 1), sam)
    x = torch.randn(1, 3, 5, 5)
    want = model(x)
    with pytest.raises(RuntimeError, match="inside"), fused_layer_norms(model):
        assert type(model[1]) is LayerNorm2d
        torch.testing.assert_close(model(x), want, atol=2e-6, rtol=1e-5)
        raise RuntimeError("inside")
    assert type(model[1]) is SamLayerNorm2d  # back, even when the body failed
