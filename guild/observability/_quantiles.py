"""True quantiles of recent job durations. Pure.

Each worker keeps the durations of its last :data:`SAMPLE_SIZE` attempts
(:class:`._tally.WorkerCounts.recent`, a ring: one append per job, constant
memory at any rate). A window's quantiles are read from the durations of the
attempts that finished in it, the newest :data:`SAMPLE_SIZE` of them when more
did: exact while a window holds at most that many attempts, and the quantiles
of the most recent ones when it holds more. No bucket bounds are involved, so
a p95 of 0.3 s reads 0.3 s, not the 0.5 s bound of its histogram bucket.

The definition is the *nearest rank*: the ``q`` quantile of ``n`` values is
the smallest value with at least ``q * n`` values at or below it, always one
of the values observed. Samples from several processes merge by
concatenation (:func:`summary` of the union), so a whole ``guild run`` gets
true quantiles too.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

SAMPLE_SIZE = 1024
"""Durations kept per worker: the newest attempts' (a bounded sample)."""
QUANTILES = (0.5, 0.95, 0.99)
"""What ``/health`` reports, as ``p50``, ``p95`` and ``p99``."""


def rank(q: float, n: int) -> int:
    """The 1-based nearest rank of quantile ``q`` among ``n`` values.

    Raises:
        ValueError: ``q`` is not in [0, 1] or ``n`` is below 1.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"a quantile is a fraction in [0, 1], got {q!r}")
    if n < 1:
        raise ValueError(f"a quantile needs at least one value, got {n}")
    # The tolerance keeps a product such as 0.07 * 100 = 7.000000000000001 at 7.
    return min(n, max(1, math.ceil(q * n - 1e-9)))


def quantile_of(values: Sequence[float], q: float) -> float | None:
    """The nearest-rank ``q`` quantile of ``values`` (None: no values)."""
    if not values:
        return None
    return sorted(values)[rank(q, len(values)) - 1]


def summary(values: Iterable[float]) -> dict[str, float | None]:
    """``{"p50": …, "p95": …, "p99": …}`` of ``values`` (``None`` each when empty)."""
    ordered = sorted(values)
    n = len(ordered)
    return {_name(q): ordered[rank(q, n) - 1] if n else None for q in QUANTILES}


def _name(q: float) -> str:
    return f"p{round(q * 100):d}"
