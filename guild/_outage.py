"""What a worker does while its broker is unreachable: wait, then try again.

A broker outage (a Redis restart or failover, a SQLite disk that is full) is
not a crash of the worker: it waits with capped exponential backoff, reports
itself unhealthy (``/health`` check ``worker:<name>:broker``), and carries on
when the broker answers again. Restart intensity is left for real crashes.

The cap bounds how long a worker stays idle after its broker is back: at most
``maximum`` seconds, then one claim. Pure: the worker supplies the jitter.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._backoff import exponential_delay
from ._exports import publish


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _fraction(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not 0 <= value < 1:
        raise ValueError(f"{attribute.name} must be in [0, 1), got {value!r}")


@attrs.frozen(kw_only=True)
class OutageBackoff:
    """Waits between attempts to reach an unreachable broker.

    Attributes:
        initial: seconds after the first failure.
        multiplier: growth per further failure.
        maximum: the cap; a worker resumes at most this long after its broker returns.
        jitter: fraction by which each wait may be shortened, so that many
            workers do not reconnect in lockstep.
    """

    initial: float = attrs.field(default=0.05, validator=_positive)
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    maximum: float = attrs.field(default=1.0, validator=_positive)
    jitter: float = attrs.field(default=0.5, validator=_fraction)

    def delay(self, failures: int, rand: float) -> float:
        """Seconds to wait after the ``failures``-th failure in a row (from 1);
        ``rand`` in ``[0, 1)``."""
        return exponential_delay(
            self.initial, self.multiplier, self.maximum, self.jitter, failures, rand
        )


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
