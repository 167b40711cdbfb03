"""Is CPU training bitwise reproducible? The same seed, 20 AdamW steps of a small conv net (conv,
BatchNorm, ReLU: the student's kind of layers); prints a hash of the weights per thread count.
See docs/determinism.md for what it showed.

    python scripts/determinism_probe.py
    ONEDNN_MAX_CPU_ISA=AVX2 python scripts/determinism_probe.py   # oneDNN's kernels for an AVX2-only CPU
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from kdsam.bench.latency import device_name


def net() -> nn.Module:
    layers: list[nn.Module] = []
    c = 3
    for w in (32, 64, 128, 256):
        layers += [nn.Conv2d(c, w, 3, stride=2, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
        c = w
    return nn.Sequential(*layers, nn.Conv2d(c, 256, 1))


def train(threads: int, steps: int = 20, deterministic: bool = False) -> dict[str, Any]:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.manual_seed(0)
    model = net()
    opt = torch.optim.AdamW(model.parameters(), 1e-3)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 128, 128, generator=gen)
    y = torch.randn(8, 256, 8, 8, generator=gen)
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
    digest = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters())).hexdigest()
    return {"threads": threads, "deterministic": deterministic, "loss": loss.item(), "weights_sha": digest[:16]}


if __name__ == "__main__":
    cpu = device_name(torch.device("cpu"))
    print(json.dumps({"cpu": cpu, "torch": torch.__version__, "isa": torch.backends.cpu.get_cpu_capability()}))
    for threads in (1, 2, 1, 2):
        print(json.dumps(train(threads)))
    print(json.dumps(train(2, deterministic=True)))
