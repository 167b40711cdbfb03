"""This process's place among torchrun's processes, read from the environment torchrun sets.

Shared by training (`kdsam.distill.process`, which also joins the process group) and by folder
inference (`kdsam predict --input`, whose ranks only split the files and never talk), so inference
reads the same variables by the same rule without importing the training stack.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

from kdsam.errors import KdsamError

T = TypeVar("T")


@dataclass(frozen=True)
class Place:
    """RANK, WORLD_SIZE and LOCAL_RANK; (0, 1, 0) when run alone."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's disjoint share (every world_size-th item); the union over ranks is `items`."""
        return shard(items, self.rank, self.world_size)


def shard(items: Sequence[T], rank: int, world_size: int) -> list[T]:
    return list(items[rank::world_size])


def torchrun_place() -> Place:
    """This process's Place; one line when torchrun's variables are not integers or RANK is not
    below WORLD_SIZE."""
    try:
        place = Place(*(int(os.environ.get(k, d)) for k, d in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", 0))))
    except ValueError as err:
        raise KdsamError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err})") from err
    if not 0 <= place.rank < place.world_size:
        raise KdsamError(f"RANK={place.rank} is not in 0..WORLD_SIZE-1 ({place.world_size})")
    return place
