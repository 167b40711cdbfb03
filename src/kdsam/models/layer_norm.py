"""SAM's LayerNorm2d as one layer norm over the channels of each pixel: the same parameters and the
same results (to about 2e-6), computed faster.

SAM's `LayerNorm2d` (necks of every image encoder, and the mask decoder's upscaling) writes the norm
as mean and variance arithmetic over the channel axis of an NCHW tensor. Traced to ONNX that is
ReduceMean, Sub, Pow, ReduceMean, Add, Sqrt, Div over a strided axis: 19 % of the demo student's
INT8 encoder under onnxruntime. Permuted to channels-last it is one fused LayerNormalization, and
the INT8 encoder ran 1.34x faster (49 -> 37 ms per 256x256 slice on one thread). `kdsam export`
traces every SAM LayerNorm2d of a model (students' and teachers' necks, all mask decoders) this
way. Training keeps SAM's module: under bf16 autocast its arithmetic returns fp32 (the fp32 weight
promotes it), where `F.layer_norm` returns bf16, and a student's bf16 gradients then moved 17x
further from fp32 (`kdsam bench-training --parts precision`, ResNet-18 at 64 px: rel. L2 0.57
against 0.033).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from segment_anything.modeling import common
from torch import nn


class LayerNorm2d(common.LayerNorm2d):
    """`segment_anything`'s LayerNorm2d (same state_dict), normalising each pixel's channels in one
    op; for inference graphs (`fused_layer_norms`), see the module docstring."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # numel(), not x.shape[1]: a traced graph then holds a constant, not a shape computation
        channels_last = x.permute(0, 2, 3, 1)
        normed = F.layer_norm(channels_last, (self.weight.numel(),), self.weight, self.bias, self.eps)
        return normed.permute(0, 3, 1, 2)


@contextmanager
def fused_layer_norms(module: nn.Module) -> Iterator[nn.Module]:
    """Every SAM LayerNorm2d inside `module` computed as `LayerNorm2d` above while inside (the
    parameters are untouched; their class is switched back on leaving)."""
    switched = [m for m in module.modules() if type(m) is common.LayerNorm2d]
    for m in switched:
        m.__class__ = LayerNorm2d
    try:
        yield module
    finally:
        for m in switched:
            m.__class__ = common.LayerNorm2d
