"""Capped exponential backoff with jitter: one formula for job retries and restarts."""

from __future__ import annotations

import math


def exponential_delay(
    initial: float, multiplier: float, maximum: float, jitter: float, n: int, rand: float
) -> float:
    """``initial * multiplier ** (n - 1)``, capped at ``maximum``, shortened by up to
    ``jitter`` of itself (``rand`` in ``[0, 1)``); ``n`` counts from 1."""
    try:
        raw = initial * multiplier ** max(0, n - 1)
    except OverflowError:  # a huge n: the cap is the answer
        raw = math.inf if initial > 0 else 0.0
    return min(raw, maximum) * (1.0 - jitter * rand)
