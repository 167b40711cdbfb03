"""Slices run concurrently share the cores: torch's threads are split among the workers."""

from __future__ import annotations

import pytest
import torch

from kdsam.infer.volume import slice_workers
from tests.infer.fake_slices import FakeSlices


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_two_workers_get_one_torch_thread_each_and_give_them_back(two_threads) -> None:
    model = FakeSlices(8)
    model.workers = 2
    with pytest.raises(RuntimeError, match="inside"), slice_workers(model) as pool:
        assert pool is not None and pool.submit(torch.get_num_threads).result() == 1
        raise RuntimeError("inside")
    assert torch.get_num_threads() == 2  # restored, even when a slice failed


def test_one_worker_runs_in_the_caller_with_every_thread(two_threads) -> None:
    with slice_workers(FakeSlices(8)) as pool:
        assert pool is None and torch.get_num_threads() == 2
