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

import abc
import enum
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import attrs
import structlog

from .._exports import publish
from .._job import Job

if TYPE_CHECKING:
    from ._feature_events import (
        JobLimitWaited,
        JobProgressed,
        LoopStalled,
        RateLimited,
        SandboxRan,
        WorkerBrokerChanged,
        WorkflowChanged,
    )


class Outcome(enum.Enum):
    """How one attempt of a job ended."""

    DONE = "done"
    RETRY = "retry"
    DEAD = "dead"
    RELEASED = "released"
    CANCELLED = "cancelled"
    """Ended on a cancel request (``broker.cancel``): stopped, or never run."""


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

    ``state`` is a :class:`guild.supervision.WorkerState` (a ``str``: its value,
    such as ``running`` or ``half_open``, is what every output shows).
    """

    worker: str
    state: str
    at: float
    detail: str | None = None
    restarts_in_period: int = 0
    last_error: str | None = None


class Instrument:
    """Receives runtime events; every method defaults to doing nothing."""

    def job_started(self, event: JobStarted) -> None:
        """A handler began an attempt of a job."""

    def job_finished(self, event: JobFinished) -> None:
        """An attempt ended (done, retry, dead or released)."""

    def claim_polled(self, event: ClaimPolled) -> None:
        """The claimer's broker call returned."""

    def job_progress(self, event: JobProgressed) -> None:
        """A running job's progress was written (see :class:`JobProgressed`)."""

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        """A supervised child changed state."""

    def service_state_changed(self, event: WorkerStateChanged) -> None:
        """A system task of a run changed state: the HTTP server, the rollout
        recorder, a canary's controller, the workflow coordinator (``event.worker``
        names it). Supervised like a worker, but not judged as one by /health."""

    def loop_stalled(self, event: LoopStalled) -> None:
        """The event loop was blocked (see :class:`LoopStalled`). Called from the
        watchdog's thread, not the loop's: it must be thread-safe."""

    def rate_limited(self, event: RateLimited) -> None:
        """A task waited at a rate limiter."""

    def sandbox_ran(self, event: SandboxRan) -> None:
        """A sandboxed command ran or was refused."""

    def job_limit_waited(self, event: JobLimitWaited) -> None:
        """A job was admitted by its worker's limit, after waiting ``event.waited``."""

    def workflow_changed(self, event: WorkflowChanged) -> None:
        """A workflow moved (see :class:`WorkflowChanged`)."""

    def worker_broker_changed(self, event: WorkerBrokerChanged) -> None:
        """What a worker's broker calls fail with changed (see
        :class:`WorkerBrokerChanged`)."""


_METHODS = frozenset(name for name in vars(Instrument) if not name.startswith("_"))


class SomeJobsInstrument(Instrument, abc.ABC):
    """An instrument that hears ``job_finished`` of some jobs only (those for
    which :meth:`hears` is true): for every other job the worker builds no event
    at all, if no other instrument listens. Internal: the workflow coordinator's
    signal is one, and most jobs belong to no workflow."""

    @abc.abstractmethod
    def hears(self, job: Job) -> bool:
        """Whether ``job_finished`` of ``job`` is for this instrument."""


class Instruments:
    """A set of instruments that is called as one.

    ``instruments.emit("job_finished", event)`` calls every instrument that
    overrides ``job_finished``; ``bool(instruments.wants("job_started"))`` lets a
    hot path skip building an event nobody listens to.
    """

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        self._instruments: list[Instrument] = []
        self._hooks: dict[str, list[Any]] = {name: [] for name in _METHODS}
        # When every job_finished listener hears only some jobs: whether any
        # hears a given job (else None: wants("job_finished") says it all).
        self._finished_filter: Callable[[Job], bool] | None = None
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
        listeners = [
            i for i in self._instruments if type(i).job_finished is not Instrument.job_finished
        ]
        filters = [i.hears for i in listeners if isinstance(i, SomeJobsInstrument)]
        if not listeners or len(filters) < len(listeners):
            self._finished_filter = None
        elif len(filters) == 1:
            self._finished_filter = filters[0]
        else:
            self._finished_filter = lambda job: any(hears(job) for hears in filters)

    def __iter__(self) -> Any:
        return iter(list(self._instruments))

    def wants(self, name: str) -> bool:
        return bool(self._hooks[name])

    def wants_finished(self, job: Job) -> bool:
        """Whether anyone hears a ``job_finished`` event of ``job``: the worker
        builds one only then (see :class:`SomeJobsInstrument`)."""
        hears = self._finished_filter
        if hears is None:
            return bool(self._hooks["job_finished"])
        return hears(job)

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


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
