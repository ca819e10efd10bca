"""Typed runtime events and the Instrument fan-out.

The runtime never logs, counts or streams by itself: it tells its instruments
what happened, and each instrument (structlog logs, Prometheus metrics, the
/events websocket, a user's own) decides what to do with it. Every method of
:class:`Instrument` is a no-op, so an instrument overrides only what it needs.

Instruments are called synchronously on the worker's task; they must be quick
and must not raise. One that raises is removed from the set (and the error is
logged), so a broken instrument can never take a worker down.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

import attrs
import structlog

from .._job import Job


class Outcome(enum.Enum):
    """How one attempt of a job ended."""

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    RELEASED = "released"


@attrs.frozen(kw_only=True, slots=True)
class JobStarted:
    worker: str
    job: Job
    at: float
    """Broker clock time at the start; ``at - job.enqueued_at`` is the queue latency."""


@attrs.frozen(kw_only=True, slots=True)
class JobFinished:
    worker: str
    job: Job
    outcome: Outcome
    duration: float
    error: str | None = None
    retry_at: float | None = None


@attrs.frozen(kw_only=True, slots=True)
class ClaimPolled:
    """The claimer asked the broker for work (emitted after every claim call)."""

    worker: str
    queue: str
    claimed: int
    at: float


@attrs.frozen(kw_only=True, slots=True)
class WorkerStateChanged:
    """A worker (or any supervised child) changed state.

    ``state`` is one of ``starting``, ``running``, ``draining``, ``stopped``,
    ``crashed``, ``restarting``, ``open``, ``half_open``, ``closed``, ``gave_up``.
    """

    worker: str
    state: str
    at: float
    detail: str | None = None
    restarts_in_period: int = 0
    last_error: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class RateLimited:
    """A task waited for a rate limiter."""

    limiter: str
    waited: float


@attrs.frozen(kw_only=True, slots=True)
class SandboxRan:
    argv: tuple[str, ...]
    exit_code: int | None
    duration: float
    refused_rule: str | None = None


class Instrument:
    """Receives runtime events; every method defaults to doing nothing."""

    def job_started(self, event: JobStarted) -> None:
        """A handler began an attempt of a job."""

    def job_finished(self, event: JobFinished) -> None:
        """An attempt ended (done, retry, dead or released)."""

    def claim_polled(self, event: ClaimPolled) -> None:
        """The claimer's broker call returned."""

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        """A supervised child changed state."""

    def rate_limited(self, event: RateLimited) -> None:
        """A task waited at a rate limiter."""

    def sandbox_ran(self, event: SandboxRan) -> None:
        """A sandboxed command ran or was refused."""


_METHODS = frozenset(name for name in vars(Instrument) if not name.startswith("_"))


class Instruments:
    """A set of instruments that is called as one.

    ``instruments.emit("job_finished", event)`` calls every instrument that
    overrides ``job_finished``; ``bool(instruments.wants("job_started"))`` lets a
    hot path skip building an event nobody listens to.
    """

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self._instruments: list[Instrument] = []
        self._hooks: dict[str, list[Any]] = {name: [] for name in _METHODS}
        for instrument in instruments:
            self.add(instrument)

    def add(self, instrument: Instrument) -> None:
        self._instruments.append(instrument)
        self._rebuild()

    def remove(self, instrument: Instrument) -> None:
        if instrument in self._instruments:
            self._instruments.remove(instrument)
            self._rebuild()

    def _rebuild(self) -> None:
        for name in _METHODS:
            self._hooks[name] = [
                getattr(i, name)
                for i in self._instruments
                if getattr(type(i), name) is not getattr(Instrument, name)
            ]

    def __iter__(self) -> Any:
        return iter(list(self._instruments))

    def wants(self, name: str) -> bool:
        return bool(self._hooks[name])

    def emit(self, name: str, event: object) -> None:
        for hook in self._hooks[name]:
            try:
                hook(event)
            except Exception:
                instrument = hook.__self__
                structlog.get_logger("guild").exception(
                    "instrument_failed", instrument=type(instrument).__name__, hook=name
                )
                self.remove(instrument)
