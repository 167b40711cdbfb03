"""Which training items each rank sees, in which order: a seeded permutation per epoch that can
start part-way through, so a run stopped mid-epoch resumes exactly where it was."""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochSampler(Sampler[int]):
    """This rank's share of the epoch's permutation of `n` items, from global position `start` on.

    The permutation and padding are `torch.utils.data.DistributedSampler`'s (a generator seeded with
    seed + epoch; the list padded with its own head to a multiple of the world size; rank r takes
    every world_size-th item from r), so global step k covers positions k x W x B to (k+1) x W x B.
    Skipping the first `start` positions is then the same as having taken those steps, with any
    number of ranks: a resumed run needs only the position, not the old world size.
    """

    def __init__(self, n: int, world_size: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.n, self.world_size, self.rank, self.seed = n, world_size, rank, seed
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def _order(self) -> list[int]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        rest = order[self.start :]
        pad = -len(rest) % self.world_size
        return rest + (order * math.ceil(pad / max(self.n, 1)))[:pad]

    def __iter__(self) -> Iterator[int]:
        return iter(self._order()[self.rank :: self.world_size])

    def __len__(self) -> int:
        return math.ceil(max(self.n - self.start, 0) / self.world_size)
