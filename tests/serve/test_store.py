"""Sessions forget: a cap (least recently used first) and an idle timeout, for the tabs closed unannounced."""

from __future__ import annotations

import pytest

from kdsam.serve.store import ExpiringStore


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_entries_expire_after_the_idle_time_and_use_keeps_them() -> None:
    clock = Clock()
    store: ExpiringStore[str] = ExpiringStore(cap=8, ttl_s=60, clock=clock)
    idle, used = store.add("idle"), store.add("used")
    clock.now = 50
    assert store.get(used) == "used"
    clock.now = 100  # idle for 100 s, used 50 s ago
    with pytest.raises(KeyError):
        store.get(idle)
    assert store.get(used) == "used" and len(store) == 1
    clock.now = 161
    assert len(store) == 0


def test_the_cap_evicts_the_least_recently_used() -> None:
    store: ExpiringStore[int] = ExpiringStore(cap=2, ttl_s=1e9)
    a, b = store.add(1), store.add(2)
    store.get(a)
    store.add(3)
    with pytest.raises(KeyError):
        store.get(b)
    assert store.get(a) == 1 and store.pop(a) and not store.pop(a)


def test_dropped_values_are_announced_whichever_way_they_go() -> None:
    clock, dropped = Clock(), []
    store: ExpiringStore[str] = ExpiringStore(cap=2, ttl_s=60, clock=clock, on_drop=dropped.append)
    a, b = store.add("expired"), store.add("popped")
    clock.now = 30
    store.pop(b)
    store.add("kept")
    clock.now = 70
    store.add("new")  # "expired" goes by age, so the cap of 2 drops nothing more
    assert dropped == ["popped", "expired"] and len(store) == 2
    store.add("one more")
    assert dropped == ["popped", "expired", "kept"]
    with pytest.raises(KeyError):
        store.get(a)
