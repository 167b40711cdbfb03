"""Server-side state that forgets: a bounded LRU whose entries also expire after an idle time.

A tab that is closed without saying so (a crash, a lost connection) leaves its session behind; the
idle timeout frees it, and the cap bounds memory whatever the clients do. Thread-safe: the handlers
run in a thread pool.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")
DEFAULT_TTL_S = 30 * 60.0  # a reader pausing over a case for half an hour keeps it


class ExpiringStore(Generic[T]):
    """Key -> value; at most `cap` entries (least recently used evicted first), each forgotten after
    `ttl_s` seconds unused. `on_drop` hears of every value expired, evicted or popped (to stop its
    background work). `clock` is injectable for tests."""

    def __init__(
        self,
        cap: int,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.monotonic,
        on_drop: Callable[[T], None] | None = None,
    ) -> None:
        self.cap, self.ttl_s, self.clock = cap, ttl_s, clock
        self.on_drop = on_drop or (lambda _value: None)
        self._items: OrderedDict[str, tuple[float, T]] = OrderedDict()
        self._lock = threading.Lock()

    def _expire(self) -> None:
        now = self.clock()
        while self._items:
            key, (used, _) = next(iter(self._items.items()))
            if now - used <= self.ttl_s:
                break
            self.on_drop(self._items.pop(key)[1])

    def add(self, value: T) -> str:
        """Store `value` under a new random key; returns the key."""
        key = uuid.uuid4().hex
        with self._lock:
            self._expire()
            self._items[key] = (self.clock(), value)
            while len(self._items) > self.cap:
                self.on_drop(self._items.popitem(last=False)[1][1])
        return key

    def get(self, key: str) -> T:
        """The value, marked as just used; KeyError when unknown, evicted or expired."""
        with self._lock:
            self._expire()
            _, value = self._items.pop(key)
            self._items[key] = (self.clock(), value)
            return value

    def pop(self, key: str) -> bool:
        with self._lock:
            item = self._items.pop(key, None)
        if item is not None:
            self.on_drop(item[1])
        return item is not None

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._items)
