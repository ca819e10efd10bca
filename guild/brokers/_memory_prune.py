"""What the memory broker frees, and when: expiry times of finished jobs and keys.

A finished job is added once, with the version its entry had when it finished;
an idempotency key once, when it is taken. ``due_jobs(now)`` and
``due_keys(now)`` pop what is due by ``now``, soonest first (entries due at the
same time come in no promised order). Nothing is removed in place: a job that
moved on since (requeued, purged) is still popped, and the broker skips it
because its entry's version changed. A key taken again is popped for its old
expiry and kept, because the broker checks the key's current expiry. Each
entry is popped once; time is passed in, never read.

Jobs finish at a clock that only goes forward and keep one retention each, so
their expiry times mostly come in order: those go into a FIFO of three deques
(times, ids, versions) that holds only floats, strings and ints, which the
garbage collector never tracks. Added and popped in O(1), they cost nothing per
collection however many finished jobs are held; a tuple per job would be one
more object for every young collection to walk. A time earlier than the FIFO's
last (a second retention, dead letters beside done jobs, a clock that stepped
back) goes into a heap instead, and ``due_jobs`` merges the two.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Iterator

import attrs


@attrs.define
class Expiries:
    """Pending expiries of finished jobs and idempotency keys, by time."""

    _times: deque[float] = attrs.Factory(deque)
    _ids: deque[str] = attrs.Factory(deque)
    _versions: deque[int] = attrs.Factory(deque)
    _jobs: list[tuple[float, str, int]] = attrs.Factory(list)
    _keys: list[tuple[float, str, str]] = attrs.Factory(list)

    def __len__(self) -> int:
        return len(self._times) + len(self._jobs) + len(self._keys)

    def add(self, at: float, job_id: str, version: int) -> None:
        """Free job ``job_id`` at ``at`` if its entry still has ``version`` then;
        ``inf`` (kept until purged) is not stored at all."""
        if at == math.inf:
            return
        times = self._times
        if not times or at >= times[-1]:
            times.append(at)
            self._ids.append(job_id)
            self._versions.append(version)
        else:
            heapq.heappush(self._jobs, (at, job_id, version))

    def add_key(self, at: float, queue: str, key: str) -> None:
        heapq.heappush(self._keys, (at, queue, key))

    def due_jobs(self, now: float) -> Iterator[tuple[str, int]]:
        """``(job_id, version)`` of every job due by ``now``, soonest first; each once."""
        times, heap = self._times, self._jobs
        while True:
            if times and times[0] <= now and not (heap and heap[0][0] < times[0]):
                times.popleft()
                yield self._ids.popleft(), self._versions.popleft()
            elif heap and heap[0][0] <= now:
                _, job_id, version = heapq.heappop(heap)
                yield job_id, version
            else:
                return

    def due_keys(self, now: float) -> Iterator[tuple[str, str]]:
        """``(queue, key)`` of every key due by ``now``, soonest first; each once."""
        while self._keys and self._keys[0][0] <= now:
            _, queue, key = heapq.heappop(self._keys)
            yield queue, key
