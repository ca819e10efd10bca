"""Progress reports from running handlers: ``guild.progress(fraction, message)``.

A handler calls :func:`progress` as often as it likes; the worker turns that
into at most one broker write per job every :data:`PROGRESS_INTERVAL` seconds.

Theory of operation:

* The worker runs each handler with its job's :class:`_Reporter` in a context
  variable, so :func:`progress` needs no argument to know which job it is about
  (tasks a handler starts inherit it; so does a thread of ``trio.to_thread``,
  which hops back to the Trio thread to report). A reporter is two fields until
  its handler first reports: only then does it get a throttle and join the
  writer's active set, so a job that never reports (most) costs one small object.
* :class:`ProgressThrottle` is the policy, pure and clock-free: a report replaces
  the pending value (the latest wins); the pending value may be written once
  ``interval`` has passed since the last write; the value pending when the
  handler ends is always written (the final value is never lost).
* One writer task per worker (:meth:`ProgressWriter.run`) sleeps until the
  earliest pending value is due, then writes every due value in one
  ``Broker.set_progress`` call and emits a ``job_progress`` event for each.
  A handler that returns waits for its own final write (and for a write of its
  already in flight) before the job is settled: the broker keeps progress only
  of jobs still held.
* A failed write is logged and dropped: progress is advisory, never a reason
  for a job or a worker to fail.
"""

from __future__ import annotations

import contextvars
import math
from typing import NoReturn

import attrs
import structlog
import trio

from ._errors import BrokerError
from ._job import Delivery
from ._jobinfo import JobProgress, check_fraction, check_message
from .brokers._protocol import Broker
from .observability._events import Instruments

PROGRESS_INTERVAL = 0.25
"""Seconds between two progress writes of one job (at most four a second)."""

_log = structlog.get_logger("guild.worker")


@attrs.define(slots=True)
class ProgressThrottle:
    """When one job's progress reports may be written (policy only, no I/O).

    Times are whatever clock the caller uses, as long as it is one clock.
    """

    interval: float = PROGRESS_INTERVAL
    last_write: float | None = None
    pending: JobProgress | None = None

    def offer(self, progress: JobProgress) -> bool:
        """Make ``progress`` the value to write next; True when none was pending
        before (the writer may need waking)."""
        fresh = self.pending is None
        self.pending = progress
        return fresh

    def due(self) -> float:
        """When the pending value may be written (``inf``: nothing pending)."""
        if self.pending is None:
            return math.inf
        if self.last_write is None:
            return -math.inf
        return self.last_write + self.interval

    def take(self, now: float) -> JobProgress | None:
        """The value to write at ``now``, if one is pending and due; counts the write."""
        if self.pending is None or now < self.due():
            return None
        taken, self.pending = self.pending, None
        self.last_write = now
        return taken

    def final(self) -> JobProgress | None:
        """The value still pending when the run ends: written whatever the interval."""
        taken, self.pending = self.pending, None
        return taken


@attrs.define(slots=True, eq=False)
class _Reporter:
    delivery: Delivery
    writer: ProgressWriter
    # Made at the first report (see ProgressWriter.enter).
    throttle: ProgressThrottle | None = None
    writing: trio.Event | None = None
    closed: bool = False

    def report(self, fraction: float, message: str | None) -> None:
        if self.closed:
            return  # a straggler (a thread, a leaked task) after the run ended
        progress = JobProgress(fraction=fraction, message=message, at=self.writer.broker.now())
        throttle = self.throttle
        if throttle is None:
            throttle = self.throttle = ProgressThrottle(self.writer.interval)
            self.writer.activate(self)
        if throttle.offer(progress):
            self.writer.wake()

    def due(self) -> float:
        return math.inf if self.throttle is None else self.throttle.due()


_current: contextvars.ContextVar[_Reporter | None] = contextvars.ContextVar(
    "guild_progress", default=None
)


def progress(fraction: float, message: str | None = None) -> None:
    """Say how far the running job got: ``fraction`` from 0 to 1, and what it is doing.

    Call it from a handler (or a task or ``trio.to_thread`` thread it started) as
    often as you like: the worker writes the latest value to the broker at most
    every ``PROGRESS_INTERVAL`` seconds, and always the last one, so that
    ``guild job show`` in any process shows it. Each write also emits a
    ``job_progress`` event (``/events``, the dashboard). Outside a worker's run
    (a handler called directly in a test), it only checks its arguments.

    Raises:
        InvalidProgress: ``fraction`` is not a number from 0 to 1, or
            ``message`` is not a string.
    """
    value = check_fraction(fraction)
    text = check_message(message)
    reporter = _current.get()
    if reporter is None:
        return
    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        # A thread of trio.to_thread (the context came with it): report on the loop.
        trio.from_thread.run_sync(reporter.report, value, text)
        return
    reporter.report(value, text)


class ProgressWriter:
    """A worker's progress writes: one task, batched, throttled per job.

    Args:
        broker: where progress is stored.
        instruments: told of each write (``job_progress``).
        worker: the worker's name, for events and logs.
        interval: seconds between two writes of one job.
    """

    def __init__(
        self,
        broker: Broker,
        instruments: Instruments,
        worker: str,
        *,
        interval: float = PROGRESS_INTERVAL,
    ) -> None:
        self.broker = broker
        self._instruments = instruments
        self._worker = worker
        self.interval = interval
        # The running jobs' reporters that have reported (and so have a throttle).
        self._active: dict[tuple[str, str], _Reporter] = {}
        self._wakeup = trio.Event()

    def wake(self) -> None:
        self._wakeup.set()

    def activate(self, reporter: _Reporter) -> None:
        """Count ``reporter`` in: its first report came (the writer task reads it)."""
        self._active[(reporter.delivery.job.id, reporter.delivery.receipt)] = reporter

    def enter(self, delivery: Delivery) -> contextvars.Token[_Reporter | None]:
        """Make ``delivery``'s job the one :func:`progress` reports on, in this context."""
        return _current.set(_Reporter(delivery, self))

    def leave(self, token: contextvars.Token[_Reporter | None]) -> _Reporter | None:
        """End the run entered with ``token``; returns its reporter when a value is
        still pending, for :meth:`finish` (``None``, with no await, when none is)."""
        reporter = _current.get()
        _current.reset(token)
        if reporter is None:
            return None
        reporter.closed = True
        throttle = reporter.throttle
        if throttle is None:
            return None  # it never reported
        self._active.pop((reporter.delivery.job.id, reporter.delivery.receipt), None)
        return reporter if throttle.pending is not None else None

    async def finish(self, reporter: _Reporter) -> None:
        """Write the run's last value if it is still pending (after any write of it
        in flight, so that the last value lands last)."""
        final = None if reporter.throttle is None else reporter.throttle.final()
        if final is None:
            return
        if reporter.writing is not None:
            await reporter.writing.wait()
        await self._write([(reporter, final)])

    async def run(self) -> NoReturn:
        """Write due progress values, for ever (cancel to stop)."""
        while True:
            self._wakeup = trio.Event()
            due = min((r.due() for r in self._active.values()), default=math.inf)
            if due > trio.current_time():
                with trio.move_on_at(due):
                    await self._wakeup.wait()
                continue
            now = trio.current_time()
            batch = []
            for reporter in list(self._active.values()):
                taken = None if reporter.throttle is None else reporter.throttle.take(now)
                if taken is not None:
                    batch.append((reporter, taken))
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[tuple[_Reporter, JobProgress]]) -> None:
        done = trio.Event()
        for reporter, _ in batch:
            reporter.writing = done
        try:
            if self._instruments.wants("job_progress"):
                # Here, not at the top: a run whose handlers report no progress
                # never builds it.
                from .observability._feature_events import JobProgressed

                for reporter, value in batch:
                    self._instruments.emit(
                        "job_progress",
                        JobProgressed(
                            worker=self._worker,
                            job=reporter.delivery.job,
                            fraction=value.fraction,
                            message=value.message,
                            at=value.at,
                        ),
                    )
            try:
                await self.broker.set_progress([(r.delivery, value) for r, value in batch])
            except BrokerError as error:
                _log.warning(
                    "progress_not_written",
                    worker=self._worker,
                    jobs=[r.delivery.job.id for r, _ in batch][:20],
                    error=str(error),
                )
        finally:
            for reporter, _ in batch:
                if reporter.writing is done:
                    reporter.writing = None
            done.set()
