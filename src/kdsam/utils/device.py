"""`--device`: one reading of auto/cpu/cuda/cuda:N for every command (training, inference, bench)."""

from __future__ import annotations

import torch

from kdsam.errors import KdsamError


def cpu_has_native_bf16() -> bool:
    """Does this CPU compute in bf16 natively (AVX512-BF16 or AMX)? Elsewhere oneDNN emulates bf16,
    slower than fp32. Read from Linux's /proc/cpuinfo; False where that is missing."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_device(name: str | None) -> torch.device:
    """'auto' (or None): CUDA when present, else CPU; 'cpu', 'cuda', 'cuda:N' as given, checked."""
    name = (name or "auto").strip()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise KdsamError(f"--device {name!r}: not a device; use auto, cpu, cuda or cuda:N") from err
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise KdsamError(f"--device {name}: CUDA is not available here (torch {torch.__version__}); use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise KdsamError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here")
    elif device.type != "cpu":
        raise KdsamError(f"--device {name}: unsupported; use auto, cpu, cuda or cuda:N")
    return device
