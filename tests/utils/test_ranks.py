"""torchrun's variables, read once for training and folder inference alike."""

from __future__ import annotations

import pytest

from kdsam.errors import KdsamError
from kdsam.utils.ranks import Place, torchrun_place


def test_alone_is_rank_0_of_1(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert torchrun_place() == Place(0, 1, 0)


def test_ranks_share_the_items_disjointly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    shares = []
    for rank in range(3):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(torchrun_place().shard(list(range(8))))
    assert shares == [[0, 3, 6], [1, 4, 7], [2, 5]]


@pytest.mark.parametrize(
    ("rank", "world", "words"), [("x", "2", "must be integers"), ("2", "2", "not in 0..WORLD_SIZE-1")]
)
def test_bad_variables_are_one_line(monkeypatch: pytest.MonkeyPatch, rank: str, world: str, words: str) -> None:
    monkeypatch.setenv("RANK", rank)
    monkeypatch.setenv("WORLD_SIZE", world)
    with pytest.raises(KdsamError, match=words):
        torchrun_place()
