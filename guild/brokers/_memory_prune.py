"""What the memory broker frees, and when: two heaps of expiry times.

A finished job is pushed once, with the version its entry had when it finished;
an idempotency key once, when it is taken. ``due_jobs(now)`` and
``due_keys(now)`` pop what is due by ``now``, soonest first. Nothing is removed
in place: a job that moved on since (requeued, purged) is still popped, and
the broker skips it because its entry's version changed. A key taken again is
popped for its old expiry and kept, because the broker checks the key's
current expiry. Each push is popped once, so freeing costs O(log n) per job,
whatever the number held; time is passed in, never read.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator

import attrs


@attrs.define
class Expiries:
    """Pending expiries of finished jobs and idempotency keys, by time."""

    _jobs: list[tuple[float, str, int]] = attrs.Factory(list)
    _keys: list[tuple[float, str, str]] = attrs.Factory(list)

    def __len__(self) -> int:
        return len(self._jobs) + len(self._keys)

    def add(self, at: float, job_id: str, version: int) -> None:
        """Free job ``job_id`` at ``at`` if its entry still has ``version`` then;
        ``inf`` (kept until purged) is not stored at all."""
        if at != math.inf:
            heapq.heappush(self._jobs, (at, job_id, version))

    def add_key(self, at: float, queue: str, key: str) -> None:
        heapq.heappush(self._keys, (at, queue, key))

    def due_jobs(self, now: float) -> Iterator[tuple[str, int]]:
        """``(job_id, version)`` of every job due by ``now``, soonest first; each once."""
        while self._jobs and self._jobs[0][0] <= now:
            _, job_id, version = heapq.heappop(self._jobs)
            yield job_id, version

    def due_keys(self, now: float) -> Iterator[tuple[str, str]]:
        """``(queue, key)`` of every key due by ``now``, soonest first; each once."""
        while self._keys and self._keys[0][0] <= now:
            _, queue, key = heapq.heappop(self._keys)
            yield queue, key
