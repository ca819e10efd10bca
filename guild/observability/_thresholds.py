"""Where healthy ends: the thresholds of the health policy (:mod:`._health`).

A module of its own because every ``guild run`` builds its monitor with them
before its first job, while the policy's snapshots and verdicts are built only
when ``/health`` or ``guild status`` asks.
"""

from __future__ import annotations

import math
from typing import Any

import attrs


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be a fraction in [0, 1], got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


@attrs.frozen(kw_only=True)
class Thresholds:
    """Where healthy ends. The defaults are the seed's.

    Attributes:
        error_rate: failed / finished attempts above which a worker is degraded.
        p95_latency: seconds of p95 processing time above which a worker is degraded.
        memory: fraction of the memory limit above which the process is degraded.
        queue_length: ready jobs above which a queue is degraded.
        stall: seconds a worker with free handlers may leave ready jobs unclaimed
            before it is unhealthy.
        window: seconds the error rate and p95 are measured over.
        min_jobs: attempts a worker must have finished in the window before its
            error rate counts (1: from the first failure on).
    """

    error_rate: float = attrs.field(default=0.01, validator=_fraction)
    p95_latency: float = attrs.field(default=5.0, validator=_positive)
    memory: float = attrs.field(default=0.80, validator=_fraction)
    queue_length: int = attrs.field(default=1000, validator=attrs.validators.ge(0))
    stall: float = attrs.field(default=60.0, validator=_positive)
    window: float = attrs.field(default=60.0, validator=_positive)
    min_jobs: int = attrs.field(default=1, validator=attrs.validators.ge(1))
