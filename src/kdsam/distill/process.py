"""Where training runs: the device, mixed precision, and the process group under torchrun.

One process per device. Without torchrun this is a group of one and every collective is a no-op, so
the training loop has a single code path. Ranks share the run and cache folders (a local folder on
one machine, a shared file system across machines); only rank 0 writes the run's files.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from kdsam.errors import KdsamError
from kdsam.utils.device import cpu_has_native_bf16, resolve_device
from kdsam.utils.ranks import shard, torchrun_place

log = logging.getLogger("kdsam")

T = TypeVar("T")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEFAULT_TIMEOUT_S = 1800  # a collective waits this long for a silent rank before every rank stops


@dataclass
class TrainingProcess:
    """This process's device, its place in the group, and its precision."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    precision: str = "auto"  # one of PRECISIONS: the autocast dtype of training

    def __post_init__(self) -> None:
        """Refuse a precision this device cannot run well, in one line, before any work."""
        p, on = self.precision, self.device.type
        if p not in PRECISIONS:
            raise KdsamError(f"--precision {p}: choose one of {', '.join(PRECISIONS)}")
        if on == "cpu" and p == "fp16":
            raise KdsamError("--precision fp16: autocast in fp16 is for CUDA; on a CPU use bf16 or fp32")
        if on == "cpu" and p == "bf16" and not cpu_has_native_bf16():
            raise KdsamError(
                "--precision bf16: this CPU has no native bf16 (AVX512-BF16 or AMX), so it would run "
                "emulated and slower than fp32; use --precision fp32"
            )
        if on == "cuda" and p == "bf16" and not torch.cuda.is_bf16_supported():
            raise KdsamError(f"--precision bf16: {torch.cuda.get_device_name(self.device)} lacks bf16; use fp16")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """None for fp32. auto: on CUDA bf16 where the GPU has it (no loss scaling needed), else
        fp16; a CPU stays fp32 unless bf16 is asked for (measured in docs/training.md)."""
        if self.precision == "auto":
            if self.device.type != "cuda":
                return None
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]

    def autocast(self) -> contextlib.AbstractContextManager:
        dtype = self.amp_dtype
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Active only for fp16, whose small gradients would underflow without scaling."""
        return torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's disjoint share (every world_size-th item); the union over ranks is `items`."""
        return shard(items, self.rank, self.world_size)

    def barrier(self) -> None:
        if self.distributed:
            with collective("barrier"):
                dist.barrier()

    def all_reduce(self, values: dict[str, float], same_keys: bool = True) -> dict[str, float]:
        """Sum each value over the ranks. same_keys=False: a rank may lack some (a rank whose share
        of the validation set is empty has no validation sums); they count as 0."""
        if not self.distributed:
            return dict(values)
        keys = sorted(set().union(*self.gather(sorted(values)))) if not same_keys else sorted(values)
        t = torch.tensor([float(values.get(k, 0.0)) for k in keys], dtype=torch.float64, device=self._comm_device)
        with collective("all_reduce"):
            dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        with collective("all_gather_object"):
            dist.all_gather_object(out, obj)
        return out

    def sync_batchnorm(self, module: nn.Module) -> nn.Module:
        """`module` with its BatchNorm layers normalising over the global batch instead of each rank's
        share, so that N ranks x batch B train as one process with batch N x B would. The layers keep
        their parameters (an optimizer built on them stays valid) and their state-dict keys."""
        if not self.distributed:
            return module
        if self.device.type != "cuda":
            raise KdsamError(
                "--sync-bn: torch's SyncBatchNorm runs on CUDA only; on CPU drop it "
                "(each rank then normalises with its own batch)"
            )
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)

    @property
    def _comm_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """A failed or timed-out collective means another rank died: stop with one line, not a hang."""
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as err:
        rank = dist.get_rank() if dist.is_initialized() else 0
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise KdsamError(
            f"rank {rank}: {what} failed, another rank has stopped or is unreachable ({first}); "
            "see that rank's error, then rerun with --resume"
        ) from err


def init_process(
    device: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, precision: str = "auto"
) -> TrainingProcess:
    """This process's `TrainingProcess`: under torchrun (WORLD_SIZE > 1) it joins the process group,
    gloo on CPU, nccl on CUDA, with each rank on its LOCAL_RANK-th GPU."""
    place = torchrun_place()
    world, rank, local_rank = place.world_size, place.rank, place.local_rank
    dev = resolve_device(device)
    if dev.type == "cuda" and dev.index is None:  # torch.cuda.set_device needs an index
        dev = torch.device("cuda", local_rank if world > 1 else torch.cuda.current_device())
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # a refused precision stops here, before the group
    process = TrainingProcess(dev, rank, world, local_rank, precision)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        atexit.register(close_process)
    if world > 1 and rank != 0:
        logging.getLogger("kdsam").setLevel(logging.WARNING)  # one voice: rank 0 reports progress
    return process


def close_process() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
