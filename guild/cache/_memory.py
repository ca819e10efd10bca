"""MemoryCache: in-process, LRU-bounded, TTL by Trio's clock (so MockClock drives it)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import trio


class MemoryCache:
    """A bounded in-process cache.

    Args:
        max_entries: beyond this, the least recently used entry is dropped.
        clock: seconds; ``trio.current_time`` by default.
    """

    def __init__(
        self, *, max_entries: int = 10_000, clock: Callable[[], float] = trio.current_time
    ) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries!r}")
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, key: str) -> Any | None:
        await trio.lowlevel.checkpoint()
        entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            if entry is not None:
                del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return entry[0]

    async def set(self, key: str, value: Any, *, ttl: float) -> None:
        await trio.lowlevel.checkpoint()
        if not (ttl > 0 and not math.isnan(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        self._entries[key] = (value, self._clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> None:
        await trio.lowlevel.checkpoint()
        self._entries.pop(key, None)
