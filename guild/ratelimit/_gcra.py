"""Sans-IO rate admission: the generic cell rate algorithm (GCRA).

State is one number, the *theoretical arrival time* ``tat``: when the limiter
would be back to empty if nothing more arrived. With ``interval = period / rate``
(the spacing of a steady stream) and ``tolerance = interval * (burst - 1)`` (how
far ahead of that stream a burst may run):

* a request at ``now`` is admitted when ``tat - now <= tolerance``; the new
  ``tat`` is ``max(tat, now) + interval``;
* otherwise it is refused and may retry after ``tat - tolerance - now`` seconds.

So in any window of length ``t`` at most ``burst + t / interval`` requests are
admitted, and a steady caller is never refused more than the spacing requires.
The same arithmetic runs in Redis (``_redis.py``) so that one limit can be shared
by many processes; this module is the reference, tested with Hypothesis.
"""

from __future__ import annotations

import math

import attrs


def _positive(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive finite number, got {value!r}")


@attrs.frozen
class Rate:
    """At most ``rate`` admissions per ``period`` seconds, bursts of up to ``burst``."""

    rate: float = attrs.field(validator=_positive)
    period: float = attrs.field(default=1.0, validator=_positive)
    burst: int = attrs.field(default=1, validator=attrs.validators.ge(1))

    @property
    def interval(self) -> float:
        return self.period / self.rate

    @property
    def tolerance(self) -> float:
        return self.interval * (self.burst - 1)


@attrs.frozen
class Decision:
    """The outcome of one request: admitted or not, the new state, and when to retry."""

    admitted: bool
    tat: float
    retry_after: float


def admit(tat: float, now: float, rate: Rate) -> Decision:
    """Decide one request at ``now`` given the state ``tat`` (use ``-inf`` for a fresh limiter)."""
    earliest = tat - rate.tolerance
    # A caller that comes back exactly when told must get in, float rounding or not:
    # ``tat`` is a sum of up to ``burst`` intervals, so allow that many units in the
    # last place (plus a few), and no more.
    largest = max(1.0, abs(now), abs(tat) if math.isfinite(tat) else 0.0)
    slack = (rate.burst + 4) * math.ulp(largest)
    if earliest - now > slack:
        return Decision(admitted=False, tat=tat, retry_after=earliest - now)
    return Decision(admitted=True, tat=max(tat, now) + rate.interval, retry_after=0.0)
