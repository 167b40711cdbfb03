"""FLOPs and activation memory of one forward pass, counted on the meta device.

Counting runs the module's real forward on shape-only "meta" tensors: torch's own FlopCounterMode
counts the matrix multiplies and convolutions (a multiply-add is 2 FLOPs), and a dispatch mode
tracks the bytes of live intermediate tensors. Nothing is computed, so SAM ViT-H is counted in a
second instead of the minute its CPU forward takes, and the numbers do not depend on the machine.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode


class _LiveBytes(TorchDispatchMode):
    """Peak bytes held by tensors that ops created and Python still references (activations)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t._base is None and not func._schema.is_mutable:
                nbytes = t.untyped_storage().nbytes()
                self.live += nbytes
                weakref.finalize(t, self._release, nbytes)
        self.peak = max(self.peak, self.live)
        return out


@dataclass(frozen=True)
class Counted:
    """FLOPs and peak activation bytes of one forward pass."""

    flops: int
    activation_bytes: int


def count_forward(module: nn.Module, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Counted:
    """Count a forward of `module` on an input of `shape`, without computing it (meta tensors)."""
    meta = {
        name: torch.empty_like(t, device="meta") for name, t in [*module.named_parameters(), *module.named_buffers()]
    }
    x = torch.empty(shape, device="meta", dtype=dtype)
    counter = FlopCounterMode(display=False)
    live = _LiveBytes()
    with torch.no_grad(), counter, live:
        functional_call(module, meta, (x,), strict=False)
    return Counted(flops=int(counter.get_total_flops()), activation_bytes=int(live.peak))


def matmul_peak_gflops(threads: int, n: int = 2048, repeats: int = 3) -> float:
    """This machine's fp32 matrix-multiply peak (GFLOP/s) at a thread count: best of a few n x n matmuls.

    The ceiling a model's throughput is compared with: convolutions and attention run as matmuls.
    """
    import time

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(n, n), torch.randn(n, n)
        torch.mm(a, b)  # warm-up: thread pool, caches
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous)
    return 2 * n**3 / best / 1e9
