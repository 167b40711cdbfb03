"""The per-epoch order of training items: DistributedSampler's, and resumable part-way through."""

from __future__ import annotations

import pytest
from torch.utils.data import DistributedSampler

from kdsam.distill.sampling import EpochSampler


@pytest.mark.parametrize(("n", "world"), [(10, 1), (10, 2), (10, 3), (7, 4), (2, 5)])
def test_from_the_start_it_is_distributed_samplers_order(n, world):
    for rank in range(world):
        ours = EpochSampler(n, world, rank, seed=3)
        theirs = DistributedSampler(range(n), world, rank, shuffle=True, seed=3)
        for epoch in (1, 2):
            ours.set_epoch(epoch)
            theirs.set_epoch(epoch)
            assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize(("old_world", "new_world", "batch"), [(2, 2, 2), (2, 1, 4), (1, 3, 2)])
def test_a_resumed_epoch_takes_the_items_its_remaining_steps_would_have(old_world, new_world, batch):
    """After k global steps of W x B items, any number of ranks covers the rest of the permutation."""
    n, steps = 23, 2
    full = EpochSampler(n, 1, 0, seed=0)
    full.set_epoch(5)
    order = list(full)
    start = steps * old_world * batch
    ranks = [EpochSampler(n, new_world, r, seed=0) for r in range(new_world)]
    for r in ranks:
        r.set_epoch(5, start=start)
    shares = [list(r) for r in ranks]
    interleaved = [share[j] for j in range(len(shares[0])) for share in shares]  # global order, step by step
    assert interleaved[: n - start] == order[start:]  # the rest of the permutation, in order, none done twice
    assert len(interleaved) - (n - start) == -(n - start) % new_world  # padding: equal shares per rank
