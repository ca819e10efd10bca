"""Sans-IO retry schedule: what to do with a job whose attempt failed.

``RetryPolicy.decide(job, now, rand, after=None)`` is a pure function. Rules:

* A job that has used ``max_attempts`` runs is dead: ``Dead(reason)``. A job
  that sets no ``max_attempts`` takes its worker's, passed in.
* Otherwise it runs again at ``now + delay`` where the delay is exponential in
  the attempt number, ``base * factor ** (attempt - 1)``, capped at
  ``max_delay``, then spread by ``jitter``: the delay is multiplied by a factor
  in ``[1 - jitter, 1]`` chosen by ``rand`` (a number in ``[0, 1)`` the caller
  draws), so retries of many jobs that failed together do not arrive together
  and the cap is never exceeded.
* A handler that asked ``Retry(after=x)`` gets exactly ``x`` (no jitter): it
  knows better (a Retry-After header, say). It still spends an attempt.
"""

from __future__ import annotations

import attrs

from ._backoff import exponential_delay
from ._exports import publish
from ._job import Job, attempts_allowed


@attrs.frozen(slots=True)
class RetryAt:
    """Run the job again at ``at`` (broker clock)."""

    at: float
    delay: float


@attrs.frozen(slots=True)
class Dead:
    """Move the job to the dead letters."""

    reason: str


def _non_negative(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be >= 0, got {value!r}")


@attrs.frozen(kw_only=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, capped.

    Attributes:
        base: delay before the second attempt, in seconds.
        factor: growth per attempt (>= 1).
        max_delay: the cap, in seconds.
        jitter: the share of the delay that is random, in ``[0, 1]``.
    """

    base: float = attrs.field(default=1.0, validator=_non_negative)
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    max_delay: float = attrs.field(default=300.0, validator=_non_negative)
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )

    def delay(self, attempt: int, rand: float) -> float:
        """The delay after failed attempt number ``attempt`` (1-based)."""
        return exponential_delay(self.base, self.factor, self.max_delay, self.jitter, attempt, rand)

    def decide(
        self,
        job: Job,
        now: float,
        rand: float,
        *,
        after: float | None = None,
        max_attempts: int = 5,
    ) -> RetryAt | Dead:
        """Decide the fate of ``job`` whose attempt ``job.attempt`` just failed.

        Args:
            job: the job as run (``attempt`` counts this attempt).
            now: the broker's current time.
            rand: a number in ``[0, 1)``, for jitter.
            after: the delay the handler asked for with ``Retry(after=…)``.
            max_attempts: the worker's, for a job whose ``max_attempts`` is ``None``.
        """
        allowed = attempts_allowed(job, max_attempts)
        if job.attempt >= allowed:
            return Dead(f"gave up after {job.attempt} of {allowed} attempts")
        delay = max(0.0, after) if after is not None else self.delay(job.attempt, rand)
        return RetryAt(at=now + delay, delay=delay)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
