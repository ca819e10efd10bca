"""Job counts: the one piece of observability that runs once per job.

:class:`JobCounts` listens only to ``job_finished`` (so the worker never builds
a ``JobStarted`` event for it) and keeps cumulative, per-worker counts and a
duration histogram in plain Python numbers: an attribute increment and a
bisect per job, no lock, no allocation. Prometheus (:mod:`._metrics`) exports
them at scrape time and the health monitor (:mod:`._monitor`) derives its
rolling windows from samples of them, so a job is counted once for both.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from itertools import islice

from ._events import Instrument, JobFinished, Outcome
from ._quantiles import SAMPLE_SIZE

DURATION_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
)
"""Processing-time bucket bounds, in seconds: from a millisecond to ten minutes."""


class WorkerCounts:
    """One worker's attempts since the process started.

    ``durations[i]`` counts attempts that took at most ``DURATION_BUCKETS[i]``
    seconds and more than the bound before it; the last slot is the overflow.
    ``recent`` holds the exact durations of the last :data:`SAMPLE_SIZE`
    attempts, for true quantiles (see :mod:`._quantiles`).
    """

    __slots__ = ("dead", "duration_sum", "durations", "failed", "processed", "recent", "retried")

    def __init__(self) -> None:
        self.processed = 0
        self.failed = 0
        self.retried = 0
        self.dead = 0
        self.durations = [0] * (len(DURATION_BUCKETS) + 1)
        self.duration_sum = 0.0
        self.recent: deque[float] = deque(maxlen=SAMPLE_SIZE)

    @property
    def finished(self) -> int:
        return self.processed + self.failed

    def last(self, n: int) -> list[float]:
        """The durations of the last ``n`` attempts, of those still kept (oldest first)."""
        taken = list(islice(reversed(self.recent), max(n, 0)))
        taken.reverse()
        return taken

    def copy(self) -> WorkerCounts:
        """The counts, for differences; ``recent`` is not copied (it stays empty)."""
        twin = WorkerCounts()
        twin.processed, twin.failed = self.processed, self.failed
        twin.retried, twin.dead = self.retried, self.dead
        twin.durations = list(self.durations)
        twin.duration_sum = self.duration_sum
        return twin


class JobCounts(Instrument):
    """Counts finished attempts per worker (done, failed, retried, dead) and times them."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerCounts] = {}

    def job_finished(self, event: JobFinished) -> None:
        outcome = event.outcome
        if outcome is Outcome.RELEASED or outcome is Outcome.CANCELLED:
            # Handed back unfinished, or stopped on request: neither processed nor failed.
            return
        counts = self.workers.get(event.worker)
        if counts is None:
            counts = self.workers[event.worker] = WorkerCounts()
        duration = event.duration
        counts.durations[bisect_left(DURATION_BUCKETS, duration)] += 1
        counts.duration_sum += duration
        counts.recent.append(duration)
        if outcome is Outcome.DONE:
            counts.processed += 1
        else:
            counts.failed += 1
            if outcome is Outcome.RETRY:
                counts.retried += 1
            else:
                counts.dead += 1
