"""The inference fast path: what makes an image encoder fast without changing its weights or API.

`optimize_for_inference(model, device)` is the one function the predictor, evaluation and the
benchmark share, so the latency the benchmark reports is the latency users get. Each step is a
named `FastPath` variant so `kdsam bench --variants` can measure what it buys on its own.

The steps are applied in place through the module's own `forward` and hooks, never by wrapping it,
so `state_dict` keys, `model.img_size` and `SamPredictor` keep working unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FastPath:
    """Which inference optimisations to apply; `half=None` means "fp16 on CUDA, fp32 elsewhere"."""

    inference_mode: bool = True
    channels_last: bool = True
    half: bool | None = None
    compile: bool = False

    def dtype(self, device: torch.device) -> torch.dtype:
        half = device.type == "cuda" if self.half is None else self.half
        return torch.float16 if half else torch.float32


# Cumulative variants, each adding one step to the previous: what `kdsam bench --variants` measures.
VARIANTS: dict[str, FastPath] = {
    "baseline": FastPath(inference_mode=False, channels_last=False, half=False),
    "inference_mode": FastPath(channels_last=False, half=False),
    "channels_last": FastPath(half=False),
    "half": FastPath(half=True),
    "compile": FastPath(compile=True),
}
DEFAULT = FastPath()
HOOKS_ATTR = "_kdsam_fast_hooks"  # the hook handles of the last optimize_for_inference, on the encoder


def variants_for(device: torch.device) -> list[str]:
    """The variants worth measuring on a device: fp16 convolutions are slow emulation on CPU."""
    return [v for v in VARIANTS if device.type == "cuda" or v != "half"]


def _convert_input(dtype: torch.dtype, channels_last: bool) -> Callable[..., Any]:
    def hook(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        x = args[0].to(dtype)
        if channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return (x, *args[1:])

    return hook


def _float_output(_module: nn.Module, _args: tuple[Any, ...], out: torch.Tensor) -> torch.Tensor:
    """The prompt encoder and mask decoder stay fp32; they are small and fp16 gains nothing there."""
    return out.float().contiguous()


def _undo(encoder: nn.Module) -> None:
    """Remove what an earlier `optimize_for_inference` added, so a second call replaces it, never stacks."""
    for handle in getattr(encoder, HOOKS_ATTR, ()):
        handle.remove()
    encoder.__dict__.pop("forward", None)  # the inference_mode wrapper; the class's forward shows again


def optimize_for_inference(model: nn.Module, device: str | torch.device, fast_path: FastPath = DEFAULT) -> nn.Module:
    """Put a KDSam-like model (with `.image_encoder`) in its fastest inference form, in place.

    eval mode and no gradients always; then per `fast_path`: the encoder runs under `torch.inference_mode`
    (no autograd bookkeeping at all), in channels_last memory format (what oneDNN and cuDNN
    convolutions prefer), in fp16 on CUDA (tensor cores), and optionally `torch.compile`d.
    The encoder accepts and returns fp32 NCHW tensors as before. Returns the model. Calling it
    again (another device or fast path) replaces the earlier setup instead of adding to it.
    """
    device = torch.device(device)
    dtype = fast_path.dtype(device)
    model.eval().requires_grad_(False).to(device)
    encoder = model.image_encoder
    _undo(encoder)
    encoder.to(dtype=dtype)
    encoder.to(memory_format=torch.channels_last if fast_path.channels_last else torch.contiguous_format)
    hooks = (
        encoder.register_forward_pre_hook(_convert_input(dtype, fast_path.channels_last)),
        encoder.register_forward_hook(_float_output),
    )
    setattr(encoder, HOOKS_ATTR, hooks)
    if fast_path.inference_mode:
        encoder.forward = torch.inference_mode()(encoder.forward)
    if fast_path.compile:
        encoder.compile()
    log.info("inference path for %s on %s: %s, %s", getattr(model, "name", "model"), device, fast_path, dtype)
    return model
