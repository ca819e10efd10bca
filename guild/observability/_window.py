"""Rolling windows over cumulative counts. Pure; time is an argument.

A :class:`History` keeps samples of one worker's cumulative counts, at most one
per ``width / slots`` seconds, and reads the last ``width`` seconds as the
difference between the counts now and the newest sample at least ``width``
old (or all the counts, while no sample is that old). Memory is
constant at any job rate, and nothing runs per job: the counting is done once,
by :class:`._tally.JobCounts`.

:func:`quantile` reads a quantile from histogram bucket counts as the upper
bound of the bucket it falls in (the last finite bound when it falls past it).
That overestimates by at most one bucket, the safe side for an alert threshold.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

import attrs

from ._tally import DURATION_BUCKETS, WorkerCounts


@attrs.frozen(slots=True)
class Sample:
    at: float
    finished: int
    failed: int
    durations: tuple[int, ...]


@attrs.frozen(slots=True)
class WindowFigures:
    """Attempts in a window: how many finished, how many failed, and their durations."""

    finished: int
    failed: int
    durations: tuple[int, ...]


_ZERO = Sample(at=-math.inf, finished=0, failed=0, durations=(0,) * (len(DURATION_BUCKETS) + 1))


class History:
    """Samples of one worker's cumulative counts.

    Args:
        width: the window, in seconds.
        slots: how finely it slides; samples are at least ``width / slots`` apart.
    """

    def __init__(self, width: float, slots: int = 12) -> None:
        if not (width > 0 and math.isfinite(width)) or slots < 1:
            raise ValueError(f"a window needs a positive width and slots, got {width!r}, {slots!r}")
        self.width = width
        self._step = width / slots
        self._samples: deque[Sample] = deque(maxlen=slots + 2)

    def record(self, now: float, counts: WorkerCounts) -> None:
        """Keep a sample of ``counts`` at ``now`` unless the last one is too recent."""
        if self._samples and now - self._samples[-1].at < self._step:
            return
        self._samples.append(
            Sample(
                at=now,
                finished=counts.finished,
                failed=counts.failed,
                durations=tuple(counts.durations),
            )
        )

    def figures(self, now: float, counts: WorkerCounts) -> WindowFigures:
        """What happened in the window ending at ``now``, given the counts now."""
        # Younger than the window: everything since the counts began is in it.
        base = _ZERO
        for sample in self._samples:
            if sample.at > now - self.width:
                break
            base = sample
        return WindowFigures(
            finished=counts.finished - base.finished,
            failed=counts.failed - base.failed,
            durations=tuple(c - b for c, b in zip(counts.durations, base.durations, strict=True)),
        )


def quantile(durations: Sequence[int], q: float) -> float | None:
    """An upper bound of the ``q`` quantile of a duration histogram (None: empty)."""
    total = sum(durations)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for bound, count in zip(DURATION_BUCKETS, durations, strict=False):
        seen += count
        if seen >= rank:
            return bound
    return DURATION_BUCKETS[-1]
