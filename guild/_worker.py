"""The worker: one queue's task tree.

::

    Worker (outer nursery)
    ├── lease keeper   renews the leases of every job this worker holds
    ├── acker          acks finished jobs in batches (one broker round trip for many)
    ├── watchdog       crashes the worker if a claim call hangs (alive-but-idle is a failure)
    ├── cancel watcher asks the broker twice a second which held jobs are to be cancelled
    └── inner nursery
        ├── claimer    claims only while handler capacity (+ prefetch) is free
        └── handlers x concurrency   cancel scope (timeout) → handler → ack | retry | dead

Delivery is at least once: a job is acked only after its handler returned. A
job failure is the job's problem (retry with backoff, then dead letters); only
failures of the worker itself (a broker error, a streak of dependency failures,
a stalled claimer) leave the nursery, for the supervisor to handle. An
unreachable broker and a damaged record (``BrokerDataError``: a key another
program overwrote) are waited out instead: a restart repairs neither.

Attempts count runs, not claims (see ``brokers._protocol``). A claim starts as
many jobs as there are idle handlers and prefetches the rest uncounted; a
handler that takes a prefetched job has its start counted, durably, before it
runs it (handlers starting together share one ``Broker.start`` call). An
interrupted job (its last run's process died) runs alone: its handler waits
until every other counted run is settled, and nothing else starts until it
ends, so a job that kills the process is the only one charged for it.

Draining (``drain()``): the claimer stops; jobs claimed but not started go back
at once; running jobs get ``graceful_timeout`` seconds (a deadline on the inner
nursery, never an outright cancel), then are cancelled and handed back; pending
acks are flushed; the lease keeper stops last, so nothing held is left to expire.

Cancellation (``Broker.cancel``): the broker ends a waiting or prefetched job
itself; a started one gets a request, which the cancel watcher finds
(``Broker.cancel_requested``, every ``_CANCEL_POLL`` seconds, only while jobs are
held). A running job's handler is cancelled through its handler task's cancel
scope (a sandboxed process dies with it) and the job finished cancelled
(``Broker.finish_cancelled``); a held job not yet running is finished so when its
handler takes it, or at once if it waits for its limit (its wait's own scope is
cancelled, so the limiter never admits, nor charges, it). A handler that returned before the request landed keeps its
result. Nothing of it is on the claim/run/ack path but two attribute reads.
"""

from __future__ import annotations

import contextvars
import math
import os
import random
import secrets
import signal
import socket
import threading
import time
import traceback
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

import attrs
import structlog
import trio

from ._box import Box
from ._codec import MAX_VALUE_CHARS, ResultJSON, encode_result, storable
from ._errors import (
    BrokerDataError,
    BrokerError,
    BrokerUnavailable,
    DependencyFailure,
    GuildError,
    JobTimeout,
    Reject,
    ResultEncodeError,
    Retry,
)
from ._exports import publish
from ._job import Delivery, Job, UndecodablePayload
from ._limits import BadLimitKey, LimitGate, Permit, local_gate
from ._outage import OutageBackoff
from ._progress import ProgressWriter
from ._retry import Dead, RetryAt
from ._spec import WorkerSpec
from .brokers._protocol import Broker, CallsApart, StartsInline, StopsClaiming
from .observability._events import (
    ClaimPolled,
    Instruments,
    JobFinished,
    JobStarted,
    Outcome,
)

_log = structlog.get_logger("guild.worker")
_ACK_BATCH = 512
_ACK_BATCH_CHARS = 2 * MAX_VALUE_CHARS
_RELEASE_TIMEOUT = 5.0
# How late a job's deadline may be (a share of its timeout, at most
# _DEADLINE_SLACK_MAX seconds), so that back-to-back jobs on one handler keep
# its scope's deadline instead of moving it for each (see _run). Never early.
_DEADLINE_SLACK_SHARE = 0.001
_DEADLINE_SLACK_MAX = 0.05
# Seconds between asks for cancel requests: a running job stops within about this
# (plus one broker round trip) of its cancel.
_CANCEL_POLL = 0.5
T = TypeVar("T")
# What a worker waits out rather than crash on: a broker it cannot reach, and a
# record of its broker's that is not what guild wrote (BrokerDataError: a key
# another program overwrote). A restart repairs neither; the worker reports it
# (statistics' broker_error, /health's worker:<name>:broker), tries again with
# its OutageBackoff, and resumes once the broker answers or the record is repaired.
_WAITED_OUT = (BrokerUnavailable, BrokerDataError)


class ClaimerStalled(GuildError):
    """The claimer's broker call has not returned for far longer than it may wait."""


@attrs.frozen(slots=True)
class _Failed:
    error: BaseException
    after: float | None = None


@attrs.frozen(slots=True)
class _Rejected:
    reason: str


# A run's outcome: its result's JSON text (it is done: no object is made for
# that, the common case) or why it failed.
_Verdict = ResultJSON | _Failed | _Rejected


@attrs.define(slots=True)
class _StartBatch:
    """Prefetched deliveries whose handlers start at the same moment: one broker call."""

    deliveries: list[Delivery] = attrs.Factory(list)
    done: trio.Event = attrs.Factory(trio.Event)
    started: dict[tuple[str, str], Delivery] | None = None
    error: BrokerUnavailable | BrokerDataError | None = None


@attrs.define(slots=True)
class _Slot:
    """What one handler task is running, for its timeout and cancel paths."""

    delivery: Delivery | None = None
    started: float = 0.0
    timeout: float = 0.0
    # The handler task's current scope, and whether the cancel watcher cancelled
    # it for the job in ``delivery`` (then a fresh scope is opened for the next job).
    scope: trio.CancelScope | None = None
    cancelling: bool = False
    # A failed job whose handler outlived its deadline (it caught the Cancelled):
    # settled once the spent scope is left, as that scope would cut it short.
    overran: tuple[Delivery, _Failed | _Rejected, float] | None = None


def _failure(error: Exception | SystemExit) -> _Failed | _Rejected:
    """What a handler's exception makes of its run: a retry it asked for, a
    rejection, or a failure."""
    if isinstance(error, Retry):
        return _Failed(error, after=error.after)
    if isinstance(error, Reject):
        return _Rejected(storable(error.reason))
    return _Failed(error)


def _not_the_jobs(error: BaseException) -> bool:
    """Whether ``error``, raised through a handler, belongs to the worker rather
    than the job: a ``trio.Cancelled`` (a timeout, a cancel request, a drain), or
    a ``KeyboardInterrupt`` that may be a real Ctrl-C; or a group holding one."""
    if isinstance(error, BaseExceptionGroup):
        return any(_not_the_jobs(leaf) for leaf in error.exceptions)
    if isinstance(error, trio.Cancelled):
        return True
    return isinstance(error, KeyboardInterrupt) and _sigint_raises()


def _sigint_raises() -> bool:
    """Whether SIGINT turns into ``KeyboardInterrupt`` in this process now:
    Python's default handler, or Trio's, which raises it in whatever task runs.
    ``guild run`` takes SIGINT through a signal receiver (a drain), so there a
    ``KeyboardInterrupt`` can only be a handler's own raise: its job's failure
    (as it is in a thread other than the main one, which signals never reach)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    handler = signal.getsignal(signal.SIGINT)
    if handler is signal.default_int_handler:
        return True
    return getattr(handler, "__module__", "").startswith("trio._core")


def describe(error: BaseException) -> str:
    """``Type: message`` for logs and dead letters."""
    try:
        text = storable(str(error))
    except Exception as failure:  # a handler's own exception class, its __str__ broken
        text = f"<str() raised {type(failure).__name__}>"
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@attrs.frozen(kw_only=True, slots=True)
class WorkerStatistics:
    """A worker's figures since it started."""

    name: str
    queue: str
    held: int
    running: int
    done: int
    retried: int
    dead: int
    draining: bool
    dependency_streak: int
    broker_error: str | None = None
    """Why the broker is unreachable, or which of its records is damaged
    (:class:`~guild.BrokerDataError`), while it is (the worker waits, then resumes)."""
    broker_damaged: bool = False
    """Whether ``broker_error`` is a damaged record (a :class:`~guild.BrokerDataError`)
    rather than an unreachable broker."""
    cancelled: int = 0
    """Jobs ended on a cancel request (``broker.cancel``)."""


def _key(delivery: Delivery) -> tuple[str, str]:
    # A job and the claim that holds it: receipts alone need not be unique
    # across jobs, and one job could come back to the same worker under a new one.
    return (delivery.job.id, delivery.receipt)


def consumer_name(worker: str) -> str:
    """A consumer id unique to this process and run: host, pid, worker, random."""
    return f"{consumer_prefix(os.getpid())}{worker}:{secrets.token_hex(3)}"


def consumer_prefix(pid: int) -> str:
    """What the consumer names of every worker in process ``pid`` on this host
    start with: a supervisor hands back a killed child's jobs by it
    (``Broker.release_consumers``)."""
    return f"{socket.gethostname()}:{pid}:"


class Worker:
    """Runs one :class:`WorkerSpec` against a broker.

    Args:
        spec: what to run.
        broker: where jobs come from.
        instruments: who hears about it.
        rand: source of jitter, in ``[0, 1)``.
        outage: how long to wait between attempts while the broker is unreachable.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        broker: Broker,
        instruments: Instruments | None = None,
        *,
        rand: Callable[[], float] = random.random,
        outage: OutageBackoff | None = None,
        gate: LimitGate | None = None,
    ) -> None:
        self.spec = spec
        self.broker = broker
        self.instruments = instruments if instruments is not None else Instruments()
        self.consumer = consumer_name(spec.name)
        self._rand = rand
        self._outage = outage if outage is not None else OutageBackoff()
        # The app passes a gate shared through its broker's Redis; on its own,
        # a worker's limits are this process's.
        if gate is None and spec.limit is not None:
            gate = local_gate(spec.name, spec.limit, self.instruments)
        self._gate = gate
        self._broker_error: str | None = None
        self._broker_damaged = False
        # Why each kind of broker call (claim, ack, extend...) fails now, in the
        # order they began to: a call that works again clears only its own (a
        # damaged key fails the calls that touch it, while the others go through).
        # The worker's broker_error is the first one's, which stays put while
        # several fail by turns. Each with whether a damaged record is why.
        self._away: dict[str, tuple[str, bool]] = {}
        self._capacity = spec.concurrency + spec.prefetch
        # Refill in batches: a claim per freed slot would make one broker round
        # trip per job. Claim as soon as a quarter of the capacity is free (or at
        # once when nothing is held, so an idle worker never waits).
        self._refill_at = max(1, self._capacity // 4)
        self._held: dict[tuple[str, str], Delivery] = {}
        self._busy = 0
        self._running = 0
        self._wakeup = trio.Event()
        self._claimer_waiting = False
        self._draining = False
        self._claim_started: float | None = None
        self._lost: set[tuple[str, str]] = set()
        self._acks_flushed = trio.Event()
        # When a drain gives up on acks the broker does not take (see
        # _ack_through_outage): set at the first failed ack of the drain.
        self._ack_deadline: float | None = None
        self._streak = 0
        self._starting: _StartBatch | None = None
        # Handlers waiting for a Broker.start call (see _claimer).
        self._start_waiters = 0
        self._start_inline = broker.start_nowait if isinstance(broker, StartsInline) else None
        self._stop_claiming = broker.stop_claiming if isinstance(broker, StopsClaiming) else None
        # Held deliveries whose runs are counted (or being counted): an interrupted
        # job runs alone, once none is left. While ``_alone`` is set, nothing starts.
        self._charged: set[tuple[str, str]] = set()
        self._alone: trio.Event | None = None
        self._uncharged: trio.Event | None = None
        # A claim asked to start jobs is out: what it starts is counted too, so an
        # interrupted job waits for its answer (at most ``claim_wait``).
        self._claim_starts = False
        self._counts = {"done": 0, "retried": 0, "dead": 0, "cancelled": 0}
        # Every handler task's slot, for the cancel watcher; and held jobs with a
        # cancel request that no handler runs yet (finished when one takes them).
        self._slots: list[_Slot] = []
        self._progress = ProgressWriter(broker, self.instruments, spec.name)
        # structlog's context variables of a job's fields (see _handler_loop).
        self._log_vars: tuple[contextvars.ContextVar[Any], ...] = ()
        # The run's clock (set by each handler task, see _handler_loop).
        self._now: Callable[[], float] = trio.current_time
        self._doomed: set[tuple[str, str]] = set()
        # Held jobs waiting for their limit (spec.limit): a cancel request ends the wait.
        self._limit_waits: dict[tuple[str, str], trio.CancelScope] = {}
        # Claimed jobs for the handlers (a Box: a channel's core, for less; see _box).
        self._jobs: Box[Delivery] = Box()
        # Done jobs for the acker. A channel's way, not a list and an event: a put
        # wakes the acker in the same scheduling round, so a batch is acked (and
        # the claimer refills) while the handlers are back waiting for jobs, and
        # the next claim starts its jobs at once. With a list the refill came while
        # handlers were still busy, so the claim prefetched, and each prefetched
        # job cost a start of its own: SQLite drained 0.78x as fast.
        self._acks: Box[tuple[Delivery, ResultJSON]] = Box()

    # --- public ----------------------------------------------------------------

    def drain(self) -> None:
        """Stop claiming and finish (or hand back) what is held, then return."""
        self._draining = True
        if self._gate is not None:
            self._gate.close()  # jobs waiting for their limit go back unrun
        if self._uncharged is not None:
            # So does an interrupted job waiting to run alone (_start_alone).
            self._uncharged.set()
            self._uncharged = None
        self._wake()

    @property
    def draining(self) -> bool:
        return self._draining

    def statistics(self) -> WorkerStatistics:
        return WorkerStatistics(
            name=self.spec.name,
            queue=self.spec.queue,
            held=len(self._held),
            running=self._running,
            draining=self.draining,
            dependency_streak=self._streak,
            broker_error=self._broker_error,
            broker_damaged=self._broker_damaged,
            **self._counts,
        )

    def running_jobs(self) -> list[tuple[Job, float]]:
        """The jobs whose handlers run now, each with the seconds it has run."""
        now = time.perf_counter()
        return [(s.delivery.job, now - s.started) for s in self._slots if s.delivery is not None]

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until drained (returns) or crashed (raises).

        Error handling: a job's exception never leaves this method; nor does an
        unreachable broker or a damaged record of its (waited out, see
        ``_WAITED_OUT``). Another broker error, :class:`ClaimerStalled` or a
        dependency failure streak does.
        """
        try:
            await self._serve_tree(task_status)
        finally:
            # A crash or cancel leaves claimed-but-unstarted jobs in the buffer:
            # hand them back now instead of letting them wait out their lease.
            await self._hand_back_all()

    async def _serve_tree(self, task_status: trio.TaskStatus[None]) -> None:
        async with trio.open_nursery() as outer:
            outer.start_soon(self._lease_keeper)
            outer.start_soon(self._acker)
            outer.start_soon(self._watchdog)
            outer.start_soon(self._cancel_watcher)
            outer.start_soon(self._progress.run)
            async with trio.open_nursery() as inner:
                for _ in range(self.spec.concurrency):
                    inner.start_soon(self._handler_loop)
                inner.start_soon(self._claimer, inner.cancel_scope)
                task_status.started()
            self._acks.close()
            await trio.lowlevel.checkpoint()
            # The acker exits once every ack is flushed; then the keeper and the
            # watchdog have nothing left to guard.
            await self._acks_flushed.wait()
            outer.cancel_scope.cancel(reason="worker drained")

    # --- claimer ---------------------------------------------------------------

    def _wake(self) -> None:
        # Only the claimer waits on this, and only when capacity ran out: skip
        # the event churn on every finished job otherwise.
        if self._claimer_waiting or self._draining:
            self._claimer_waiting = False
            self._wakeup.set()
            self._wakeup = trio.Event()

    async def _claimer(self, handlers_scope: trio.CancelScope) -> None:
        spec = self.spec
        wants = self.instruments.wants("claim_polled")
        failures = 0
        # Starts cost a call (a broker that starts in line has none to save): a
        # claim then prefetches only for handlers that run jobs. Handlers given
        # only what they start (idle ones), or still waiting for the start of a
        # prefetched job (about to run it, and, if it is short, to be idle), are
        # not prefetched for: each job prefetched for them would make one of them
        # wait for a start call of its own. The handlers get going first, so that
        # the first claim sees them idle (see below: two scheduling rounds).
        lean = self._start_inline is None
        if lean:
            await trio.lowlevel.checkpoint()
            await trio.lowlevel.checkpoint()
        try:
            while not self.draining:
                free = self._capacity - self._busy
                # While an interrupted job waits to run alone, start nothing.
                start = self._idle_handlers() if self._alone is None else 0
                if (
                    free <= 0
                    or (free < self._refill_at and self._busy > 0)
                    or (lean and start == 0 and self._start_waiters > 0)
                ):
                    # Not claiming for a while: nothing may be handed to it meanwhile.
                    # Waiting from before the unregister's round trip: the jobs that
                    # finish during it wake this event (else the wake is lost, and
                    # with every job finished meanwhile nothing wakes it again).
                    self._claimer_waiting = True
                    wakeup = self._wakeup
                    await self._unregister()
                    await wakeup.wait()
                    continue
                self._claim_started = trio.current_time()
                limit = min(free, start) if lean and start > 0 else free
                self._claim_starts = start > 0
                try:
                    deliveries = await self.broker.claim(
                        spec.queue,
                        consumer=self.consumer,
                        limit=limit,
                        lease=spec.lease,
                        wait=spec.claim_wait,
                        start=start,
                        max_attempts=spec.max_attempts,
                    )
                except _WAITED_OUT as error:
                    # An outage (or a damaged key) is not a crash: wait it out (any
                    # length), then claim again.
                    self._claim_started = None
                    self._claim_answered()
                    failures += 1
                    await self._wait_out_outage("claim", error, failures)
                    continue
                self._claim_started = None
                failures = 0
                if self._away:
                    self._broker_back("claim")
                if wants:
                    self.instruments.emit(
                        "claim_polled",
                        ClaimPolled(
                            worker=spec.name,
                            queue=spec.queue,
                            claimed=len(deliveries),
                            at=self.broker.now(),
                        ),
                    )
                held, charged, send = self._held, self._charged, self._jobs.put
                for delivery in deliveries:
                    key = (delivery.job.id, delivery.receipt)  # _key, inline
                    held[key] = delivery
                    if delivery.started:
                        charged.add(key)
                    send(delivery)
                self._busy += len(deliveries)
                if self._claim_starts:
                    self._claim_answered()
                if deliveries and lean:
                    # The handlers given jobs now take them (and finish them, if
                    # short) before the next claim counts idle ones: they run in
                    # the next scheduling round, in an order Trio shuffles, so
                    # this waits two.
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
        finally:
            self._claim_started = None
            self._claim_answered()
            self._jobs.close()
            await self._unregister()
        # Drain: running jobs get graceful_timeout, then the scope's deadline
        # cancels them (and they hand their jobs back).
        handlers_scope.deadline = min(
            handlers_scope.deadline, trio.current_time() + spec.graceful_timeout
        )

    async def _unregister(self) -> None:
        """End this consumer's idle registration, if the broker keeps one (see
        ``StopsClaiming``). Shielded and bounded, like a hand-back; if the broker
        cannot be told, what is handed meanwhile waits out its lease."""
        if self._stop_claiming is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self._stop_claiming(self.spec.queue, self.consumer)
            except BrokerError as error:
                _log.warning("unregister_failed", worker=self.spec.name, error=describe(error))

    async def _watchdog(self) -> NoReturn:
        limit = self.spec.claim_wait + self.spec.stall_timeout
        while True:
            await trio.sleep(max(1.0, limit / 4))
            started = self._claim_started
            if started is not None and trio.current_time() - started > limit:
                raise ClaimerStalled(
                    f"worker {self.spec.name!r}: a claim call has not returned for"
                    f" {trio.current_time() - started:.1f}s (limit {limit:g}s)"
                )

    # --- handlers --------------------------------------------------------------

    async def _handler_loop(self) -> None:
        # One cancel scope per handler task, its deadline re-armed for each job:
        # opening a scope per job costs a third of the memory broker's throughput.
        slot = _Slot()
        self._slots.append(slot)
        jobs = self._jobs
        # The job's fields start unbound (structlog skips ``...``); binding them
        # here gives the context variables behind them, which each run then sets
        # directly (_run): one ``ContextVar.set`` a field, not a bind_contextvars.
        bound = structlog.contextvars.bind_contextvars(
            worker=self.spec.name, task_id=..., trace_id=..., attempt=...
        )
        self._log_vars = (bound["task_id"].var, bound["trace_id"].var, bound["attempt"].var)
        # What trio.current_time() reads, without its two calls on the way.
        self._now = trio.lowlevel.current_clock().current_time
        carried: Delivery | None = None
        while True:
            with trio.CancelScope() as scope:
                slot.scope = scope
                while True:
                    # Take what is buffered without a schedule point per job; the
                    # buffer holds at most concurrency + prefetch jobs, so a task
                    # still yields at least that often (and at every real await
                    # inside a handler).
                    if carried is not None:
                        delivery, carried = carried, None
                    else:
                        try:
                            found = jobs.poll()
                            if found is None:
                                found = await jobs.get()
                                if scope.cancel_called:
                                    # The last job's kept deadline passed in the pass
                                    # that brought this one, and was not delivered: it
                                    # runs in a fresh scope, or its first checkpoint
                                    # would raise that stale cancel as its own timeout.
                                    carried = found
                                    break
                            delivery = found
                        except trio.EndOfChannel:
                            return
                    if self._draining:
                        await self._hand_back(delivery)
                        continue
                    if not delivery.started:
                        # Prefetched: its run is counted before it begins.
                        if (
                            self._start_inline is not None
                            and self._alone is None
                            and not delivery.interrupted
                        ):
                            if not self._start_inline(delivery):
                                # Its lease ran out while it waited: someone else has it.
                                self._forget(delivery)
                                continue
                            self._charged.add((delivery.job.id, delivery.receipt))  # _key
                        else:
                            # Its start may wait (a shared start call, an interrupted
                            # job running alone): the last job's kept deadline must not
                            # pass meanwhile, or it would cancel this job's own run.
                            scope.deadline = math.inf
                            started = await self._begin(delivery)
                            if started is None:
                                continue
                            delivery = started
                    if delivery.interrupted:
                        try:
                            await self._run(delivery, scope, slot)
                        finally:
                            self._end_alone()
                    else:
                        await self._run(delivery, scope, slot)
                    if slot.cancelling or scope.cancel_called:
                        # Its job finished as the cancel came, or after its deadline
                        # (its handler caught the Cancelled): this scope is spent, and
                        # the next job must not inherit its cancel.
                        break
            # Only the scope's own deadline or a cancel request ends up here.
            timed_out, slot.delivery = slot.delivery, None
            if slot.overran is not None:
                overran, slot.overran = slot.overran, None
                await self._settle(*overran)
            if slot.cancelling:
                slot.cancelling = False
                if timed_out is not None:
                    await self._end_cancelled(timed_out, time.perf_counter() - slot.started)
            elif timed_out is not None:
                error = JobTimeout(timed_out.job.id, slot.timeout)
                await self._settle(timed_out, _Failed(error), time.perf_counter() - slot.started)

    def _idle_handlers(self) -> int:
        """Handlers waiting for a job now: a claim starts that many of the jobs it
        takes (they go straight to them) and prefetches the rest, uncounted."""
        return self._jobs.idle_takers()

    async def _begin(self, delivery: Delivery) -> Delivery | None:
        """Start a prefetched delivery: its attempt is counted, durably, before its
        handler runs (a run that kills the process must count, or a poison job
        would come back for ever). ``None``: its lease was lost meanwhile.

        ``_held`` keeps the delivery as claimed: the broker calls made with it
        (extend, release) go by job id and receipt, which a start leaves as they are.
        """
        try:
            while self._alone is not None:
                await self._alone.wait()
            if self.draining:
                await self._hand_back(delivery)
                return None
            if delivery.interrupted:
                return await self._start_alone(delivery)
            self._charged.add(_key(delivery))
            if self._start_inline is not None:
                started = delivery if self._start_inline(delivery) else None
            else:
                started = await self._start(delivery)
        except BaseException:
            # Cancelled before the run began (a drain deadline, a restart): the
            # job goes back now, its run not counted.
            await self._hand_back(delivery)
            raise
        if started is None:
            # Its lease ran out while it waited: someone else has it.
            self._forget(delivery)
        return started

    async def _start_alone(self, delivery: Delivery) -> Delivery | None:
        """Start an interrupted job once every other counted run has finished (and
        been settled), with nothing else starting until it ends: if it is what
        killed the last process, it is charged alone for killing this one."""
        self._alone = trio.Event()
        try:
            while (self._charged or self._claim_starts) and not self.draining:
                self._uncharged = trio.Event()
                await self._uncharged.wait()
            if self.draining:
                # A drain began while it waited: claimed and not started, it goes
                # back unrun (started once the others ended, it would run, and be
                # charged, in a process that is shutting down).
                self._end_alone()
                await self._hand_back(delivery)
                return None
            # Nothing else is counted or being counted: its batch is its own.
            self._charged.add(_key(delivery))
            started = await self._start(delivery)
        except BaseException:
            self._end_alone()
            raise
        if started is None:
            self._end_alone()
            self._forget(delivery)
        return started

    def _claim_answered(self) -> None:
        """The claim that could start jobs is back, its started jobs counted in
        ``_charged``: an interrupted job waiting for both may go once none is left."""
        self._claim_starts = False
        self._wake_uncharged()

    def _wake_uncharged(self) -> None:
        """Wake the interrupted job waiting in ``_start_alone`` once no counted run
        is left; it checks for a claim still out itself, and waits again if so."""
        if self._uncharged is not None and not self._charged:
            self._uncharged.set()
            self._uncharged = None

    def _end_alone(self) -> None:
        if self._alone is not None:
            self._alone.set()
            self._alone = None

    async def _start(self, delivery: Delivery) -> Delivery | None:
        # Group commit: the first handler to start opens a batch, lets the others
        # starting in the same scheduling round join it, and makes one broker call
        # for all. Shielded, so that the call's answer always reaches the batch.
        failures = 0
        while True:
            batch = self._starting
            # Counted until this handler runs again (see _claimer): the last one
            # wakes the claimer, which then finds those done with a short job idle.
            self._start_waiters += 1
            try:
                if batch is None:
                    batch = self._starting = _StartBatch()
                    batch.deliveries.append(delivery)
                    with trio.CancelScope(shield=True):
                        try:
                            await trio.lowlevel.checkpoint()
                            self._starting = None
                            started = await self.broker.start(batch.deliveries)
                            batch.started = {_key(d): d for d in started}
                        except _WAITED_OUT as error:
                            batch.error = error
                        finally:
                            if self._starting is batch:
                                self._starting = None
                            batch.done.set()
                else:
                    batch.deliveries.append(delivery)
                    await batch.done.wait()
            finally:
                self._start_waiters -= 1
                if not self._start_waiters:
                    self._wake()
            if batch.started is not None:
                if failures:
                    self._broker_back("start")
                return batch.started.get(_key(delivery))
            if batch.error is not None:
                failures += 1
                await self._wait_out_outage("start", batch.error, failures)
            # Otherwise the batch's leader crashed (and with it the worker): try again
            # until this task is cancelled too.

    async def _run(self, delivery: Delivery, scope: trio.CancelScope, slot: _Slot) -> None:
        if self._doomed and _key(delivery) in self._doomed:
            # Its cancel request was found while it waited for a handler.
            await self._end_cancelled(delivery, 0.0)
            return
        job = delivery.job
        spec = self.spec
        # structlog's context for the handler's logs: the worker's name is bound
        # once per handler task, the job's fields set through their variables
        # (see _handler_loop); it is what bind_contextvars would do, for less.
        task_var, trace_var, attempt_var = self._log_vars
        task_var.set(job.id)
        trace_var.set(job.trace_id)
        attempt_var.set(job.attempt)
        permit = None
        if self._gate is not None:
            permit = await self._wait_for_limit(self._gate, delivery, scope)
            if permit is None:
                return
            if self._doomed and _key(delivery) in self._doomed:
                # Its cancel request was found while it waited for its limit.
                permit.release()
                await self._end_cancelled(delivery, 0.0)
                return
        if self.instruments.wants("job_started"):
            self.instruments.emit(
                "job_started", JobStarted(worker=spec.name, job=job, at=self.broker.now())
            )
        timeout = job.timeout if job.timeout is not None else spec.timeout
        slot.delivery = delivery
        slot.started = time.perf_counter()
        if timeout is not None:
            slot.timeout = timeout
            deadline = self._now() + timeout
            # Moving a deadline costs a heap operation; back-to-back short jobs
            # would pay it for every job. So a deadline is set late by up to 0.1%
            # of the timeout (and 50 ms), and a job that starts while the one left
            # from the last job is no earlier than its own and no later than that
            # keeps it: a 60 s handler, running a job a millisecond, moves it every
            # 50th job, and no job is cut off before its timeout.
            slack = timeout * _DEADLINE_SLACK_SHARE
            if slack > _DEADLINE_SLACK_MAX:
                slack = _DEADLINE_SLACK_MAX
            kept = scope.deadline
            if not deadline <= kept <= deadline + slack:
                scope.deadline = deadline + slack
        elif scope.deadline != math.inf:
            # No timeout: the deadline a job before it left must not cut it short.
            scope.deadline = math.inf
        self._running += 1
        progress = self._progress.enter(delivery)
        try:
            # The run itself, in line: a coroutine of its own for it cost a no-op
            # job more than all the rest of this method.
            verdict: _Verdict
            if isinstance(job.payload, UndecodablePayload):
                verdict = _Rejected(job.payload.reason)
            else:
                try:
                    value = await spec.handler(job)
                # A sys.exit() in a handler (a CLI library called from a job, say)
                # is that job's failure: it must not end the worker and every job it
                # holds.
                except (Exception, SystemExit) as error:
                    verdict = _failure(error)
                # So is any other BaseException it raises (GeneratorExit, its own
                # class, a group of them), unless it is a cancel or the process's
                # own interrupt.
                except BaseException as error:
                    if _not_the_jobs(error):
                        raise
                    verdict = _Failed(error)
                else:
                    # Encoded here, in the job's own task: a result JSON cannot
                    # encode fails this attempt, not the acker's batch (and with it
                    # the worker).
                    try:
                        verdict = encode_result(value)
                    except ResultEncodeError as error:
                        verdict = _Failed(error)
        except BaseException:
            self._progress.leave(progress)
            self._running -= 1
            if permit is not None:
                permit.release()
            if not scope.cancel_called:
                # Cancelled from outside (drain deadline, restart): the job is not
                # finished, so it goes back now rather than waiting out its lease.
                slot.delivery = None
                await self._hand_back(delivery)
            raise
        unwritten = self._progress.leave(progress)
        if unwritten is not None:
            # Its last progress is written while the job is still held (and so
            # still takes it), before it is settled. Shielded and bounded, like a
            # hand-back: its run has ended, so neither its deadline nor a cancel
            # request that lands during the write is its outcome.
            with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
                await self._progress.finish(unwritten)
        self._running -= 1
        if permit is not None:
            permit.release()
        slot.delivery = None
        if isinstance(verdict, str):
            # Settled in line, with no broker call and no checkpoint: the acker acks it.
            self._done(delivery, verdict, time.perf_counter() - slot.started)
            return
        if slot.cancelling:
            # It failed as its cancel came (perhaps because of it): it ends
            # cancelled, not retried; the cancelled scope must not cut that short.
            await self._end_cancelled(delivery, time.perf_counter() - slot.started)
            return
        if scope.cancel_called:
            # Its deadline passed, yet it returned (it caught the Cancelled):
            # settled by the handler loop, outside this spent scope.
            slot.overran = (delivery, verdict, time.perf_counter() - slot.started)
            return
        # Settling a failure talks to the broker: the job's deadline must not
        # cut that short. (A done job is settled without a checkpoint, and a
        # stale deadline that fires while the next receive waits takes nothing:
        # the loop just opens a fresh scope. One deadline change per job, not two.)
        scope.deadline = math.inf
        await self._settle(delivery, verdict, time.perf_counter() - slot.started)

    async def _wait_for_limit(
        self, gate: LimitGate, delivery: Delivery, scope: trio.CancelScope
    ) -> Permit | None:
        """Wait for the job's limit (``spec.limit``); ``None``: the job is settled
        (dead-lettered, or cancelled while it waited) or handed back instead. Its
        lease is renewed meanwhile (it is held)."""
        # The wait is not the job's: a deadline left from the last job must not
        # fire during it, nor during a bad key's dead letter (the job's own
        # deadline is set once it is admitted).
        scope.deadline = math.inf
        try:
            key = gate.key_of(delivery.job)
        except BadLimitKey as error:
            await self._bury(delivery, str(error), None, 0.0)
            return None
        failures = 0
        permit = None
        held = _key(delivery)
        # Its own scope, which the cancel watcher cancels (_cancel_held): a job
        # cancelled while it waits ends then, not when the limit would admit it.
        wait = self._limit_waits[held] = trio.CancelScope()
        try:
            with wait:
                while True:
                    try:
                        permit = await gate.enter(delivery.job, key, held)
                        break
                    except _WAITED_OUT as error:
                        # The limits' Redis is away (or a limit's key damaged): wait
                        # it out, as for the broker.
                        failures += 1
                        await self._wait_out_outage("limit", error, failures)
                        if self.draining:
                            break
        except BaseException:
            await self._hand_back(delivery)
            raise
        finally:
            del self._limit_waits[held]
        if failures:
            self._broker_back("limit")
        if wait.cancelled_caught:
            # Never admitted, so its limiter charged nothing for it.
            await self._end_cancelled(delivery, 0.0)
            return None
        if permit is None:  # draining
            await self._hand_back(delivery)
        return permit

    async def _settle(
        self, delivery: Delivery, verdict: _Failed | _Rejected, duration: float
    ) -> None:
        match verdict:
            case _Rejected(reason):
                await self._bury(delivery, f"rejected: {reason}", None, duration)
            case _Failed(error, after):
                await self._fail(delivery, error, after, duration)

    def _done(self, delivery: Delivery, value: ResultJSON, duration: float) -> None:
        self._streak = 0
        self._counts["done"] += 1
        self._acks.put((delivery, value))
        if self.instruments.wants_finished(delivery.job):
            self._emit_finished(delivery.job, Outcome.DONE, duration)

    async def _fail(
        self, delivery: Delivery, error: BaseException, after: float | None, duration: float
    ) -> None:
        job = delivery.job
        reason = describe(error)
        trace = storable("".join(traceback.format_exception(error)))
        decision = self.spec.retry.decide(
            job, self.broker.now(), self._rand(), after=after, max_attempts=self.spec.max_attempts
        )
        if isinstance(decision, Dead):
            await self._bury(delivery, f"{reason} ({decision.reason})", trace, duration)
        else:
            await self._retry(delivery, decision, reason, duration, trace)
        if isinstance(error, (DependencyFailure, *self.spec.dependency_errors)):
            self._streak += 1
            if self._streak >= self.spec.dependency_threshold:
                raise DependencyFailure(
                    f"worker {self.spec.name!r}: {self._streak} dependency failures in a row;"
                    f" last: {reason}"
                ) from error
        else:
            self._streak = 0

    async def _retry(
        self,
        delivery: Delivery,
        decision: RetryAt,
        reason: str,
        duration: float,
        trace: str | None = None,
    ) -> None:
        await self._until_available(
            "retry",
            lambda: self.broker.retry(delivery, at=decision.at, error=reason, traceback=trace),
        )
        self._forget(delivery)
        self._counts["retried"] += 1
        self._emit_finished(delivery.job, Outcome.RETRY, duration, reason, decision.at)

    async def _bury(
        self, delivery: Delivery, reason: str, trace: str | None, duration: float
    ) -> None:
        await self._until_available(
            "dead", lambda: self.broker.dead(delivery, error=reason, traceback=trace)
        )
        self._forget(delivery)
        self._counts["dead"] += 1
        self._emit_finished(delivery.job, Outcome.DEAD, duration, reason)

    async def _hand_back(self, delivery: Delivery) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self.broker.release([delivery])
            except BrokerError as error:
                # The broker is the thing that failed; the lease brings the job back.
                _log.warning("release_failed", job_id=delivery.job.id, error=describe(error))
        self._forget(delivery)
        self._emit_finished(delivery.job, Outcome.RELEASED, 0.0)

    async def _hand_back_all(self) -> None:
        held = list(self._held.values())
        if not held:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self.broker.release(held)
            except BrokerError as error:
                _log.warning("release_failed", count=len(held), error=describe(error))
        for delivery in held:
            self._forget(delivery)

    async def _end_cancelled(self, delivery: Delivery, duration: float) -> None:
        # Shielded and bounded, like a hand-back: its handler's scope is cancelled.
        # If the broker cannot be told, the lease runs out and the broker ends the
        # job cancelled then (it has the request).
        with trio.CancelScope(shield=True), trio.move_on_after(_RELEASE_TIMEOUT):
            try:
                await self.broker.finish_cancelled([delivery])
            except BrokerError as error:
                _log.warning("cancel_not_recorded", job_id=delivery.job.id, error=describe(error))
        self._forget(delivery)
        self._counts["cancelled"] += 1
        self._emit_finished(delivery.job, Outcome.CANCELLED, duration)

    async def _cancel_watcher(self) -> NoReturn:
        """Ask the broker which held jobs have a cancel request; stop each."""
        while True:
            await trio.sleep(_CANCEL_POLL)
            if not self._held:
                # Nothing to ask about: a failure of the last ask is no news now.
                self._broker_back("cancel_requested")
                continue
            try:
                wanted = await self.broker.cancel_requested([job_id for job_id, _ in self._held])
            except _WAITED_OUT as error:
                self._broker_away("cancel_requested", error)
                continue
            self._broker_back("cancel_requested")
            if wanted:
                self._cancel_held(wanted)

    def _cancel_held(self, job_ids: set[str]) -> None:
        running: set[tuple[str, str]] = set()
        for slot in self._slots:
            delivery = slot.delivery
            if delivery is not None and delivery.job.id in job_ids and slot.scope is not None:
                running.add(_key(delivery))
                if not slot.cancelling:
                    slot.cancelling = True
                    slot.scope.cancel(reason=f"job {delivery.job.id} cancelled")
        for key in self._held:
            if key[0] in job_ids and key not in running:
                self._doomed.add(key)
                wait = self._limit_waits.get(key)
                if wait is not None:
                    wait.cancel(reason=f"job {key[0]} cancelled")

    def _forget(self, delivery: Delivery) -> None:
        key = (delivery.job.id, delivery.receipt)  # _key, inline: once for every job
        if self._doomed:
            self._doomed.discard(key)
        if self._lost:
            self._lost.discard(key)
        self._charged.discard(key)
        self._wake_uncharged()
        if self._held.pop(key, None) is not None:
            self._busy -= 1
            if self._claimer_waiting or self._draining:
                self._wake()

    def _emit_finished(
        self,
        job: Job,
        outcome: Outcome,
        duration: float,
        error: str | None = None,
        retry_at: float | None = None,
    ) -> None:
        # Built only when some instrument hears this job: the workflow
        # coordinator's, always there, hears only the jobs of workflows.
        if self.instruments.wants_finished(job):
            self.instruments.emit(
                "job_finished",
                JobFinished(
                    worker=self.spec.name,
                    job=job,
                    outcome=outcome,
                    duration=duration,
                    error=error,
                    retry_at=retry_at,
                ),
            )

    # --- acker and lease keeper ---------------------------------------------------

    async def _acker(self) -> None:
        acks = self._acks
        # A broker that starts jobs inline (in this process, no I/O) gains nothing
        # from the gathering round once every held job's ack is here. Any other
        # gains still: its claim and its starts, sent meanwhile, can share the
        # ack's call (SQLite commits them together; without it, 21 % more
        # instructions per drained job). On Redis, whose calls never share a round
        # trip (CallsApart), the round still paid in drains (alternated runs), but
        # the ack of the one job held goes at once: nothing else is on its way, and
        # a caller waiting for its result waits for that round too.
        inline = self._start_inline is not None
        apart = isinstance(self.broker, CallsApart)
        try:
            while True:
                try:
                    first = await acks.get()
                except trio.EndOfChannel:
                    break
                # One scheduling round lets the handlers that are about to finish
                # add their acks to this batch: one broker call for many jobs.
                if acks.buffered() + 1 < self._busy or not (inline or (apart and self._busy == 1)):
                    await trio.lowlevel.checkpoint()
                batch = [first]
                # Bounded in count and in result text: a few large results must
                # not make one broker call too big for the broker to take.
                size = len(first[1])
                while len(batch) < _ACK_BATCH and size < _ACK_BATCH_CHARS:
                    try:
                        ack = acks.poll()
                    except trio.EndOfChannel:
                        break
                    if ack is None:
                        break
                    batch.append(ack)
                    size += len(ack[1])
                if await self._ack_through_outage(batch):
                    for delivery, _ in batch:
                        self._forget(delivery)
        finally:
            self._acks_flushed.set()

    async def _ack_through_outage(self, batch: list[tuple[Delivery, ResultJSON]]) -> bool:
        """Ack ``batch``, waiting out a broker outage of any length: the jobs stay
        held (their leases renewed once the broker is back) and the acks are kept.

        Only a drain bounds the wait (by ``graceful_timeout``, so that shutdown
        cannot hang on a dead broker): then the acks are given up, loudly, and
        the jobs run again after their leases expire (at least once). Returns
        whether the acks were stored.

        The bound is one for the whole drain, not one per batch: acks that come
        in several batches (handlers finishing at different times) would
        otherwise hold shutdown for a ``graceful_timeout`` each.
        """
        failures = 0
        while True:
            try:
                await self.broker.ack(batch)
            except _WAITED_OUT as error:
                failures += 1
                if self.draining:
                    now = trio.current_time()
                    if self._ack_deadline is None:
                        self._ack_deadline = now + self.spec.graceful_timeout
                    if now >= self._ack_deadline:
                        _log.error(
                            "acks_abandoned",
                            worker=self.spec.name,
                            queue=self.spec.queue,
                            count=len(batch),
                            jobs=[d.job.id for d, _ in batch][:20],
                            error=describe(error),
                        )
                        for delivery, _ in batch:
                            self._forget(delivery)
                        return False
                await self._wait_out_outage("ack", error, failures)
                continue
            if failures:
                self._broker_back("ack")
            return True

    async def _until_available(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, again and again while the broker is unreachable."""
        failures = 0
        while True:
            try:
                value = await call()
            except _WAITED_OUT as error:
                failures += 1
                await self._wait_out_outage(what, error, failures)
                continue
            if failures:
                self._broker_back(what)
            return value

    def _broker_away(self, what: str, error: BrokerUnavailable | BrokerDataError) -> None:
        """Note that ``what`` (a kind of call) fails; logged once an episode (and
        once more for each kind of call a damaged record fails)."""
        text = describe(error)
        damaged = isinstance(error, BrokerDataError)
        away = self._away
        if not away or (damaged and what not in away):
            _log.error(
                "broker_data_damaged" if damaged else "broker_unavailable",
                worker=self.spec.name,
                queue=self.spec.queue,
                during=what,
                error=text,
                held=len(self._held),
            )
        away[what] = (text, damaged)
        self._set_broker_error(*next(iter(away.values())))

    async def _wait_out_outage(
        self, what: str, error: BrokerUnavailable | BrokerDataError, failures: int
    ) -> None:
        self._broker_away(what, error)
        await trio.sleep(self._outage.delay(failures, self._rand()))

    def _set_broker_error(self, text: str | None, damaged: bool = False) -> None:
        self._broker_damaged = damaged
        if text == self._broker_error:
            return
        self._broker_error = text
        if self.instruments.wants("worker_broker_changed"):
            # Here, not at the top: a worker whose broker never fails never builds it.
            from .observability._feature_events import WorkerBrokerChanged

            self.instruments.emit(
                "worker_broker_changed",
                WorkerBrokerChanged(
                    worker=self.spec.name, queue=self.spec.queue, error=text, at=self.broker.now()
                ),
            )

    def _broker_back(self, what: str) -> None:
        """``what`` (a kind of call) works again; the worker's broker error is that
        of the first still failing, or none."""
        away = self._away
        if away.pop(what, None) is None:
            return
        self._set_broker_error(*next(iter(away.values()), (None, False)))
        if not away:
            _log.warning(
                "broker_available",
                worker=self.spec.name,
                queue=self.spec.queue,
                held=len(self._held),
            )

    async def _lease_keeper(self) -> None:
        period = self.spec.lease / 3
        while True:
            await trio.sleep(period)
            held = [d for d in self._held.values() if _key(d) not in self._lost]
            if not held:
                self._broker_back("extend")  # nothing to renew: the last failure is no news
                continue
            try:
                renewed = await self.broker.extend(held, lease=self.spec.lease)
            except _WAITED_OUT as error:
                # Keep holding: the next period tries again. A lease that runs out
                # meanwhile shows up as lost then; an ack still counts (by job id).
                self._broker_away("extend", error)
                continue
            self._broker_back("extend")
            kept = {_key(d) for d in renewed}
            for delivery in renewed:
                if _key(delivery) in self._held:
                    self._held[_key(delivery)] = delivery
            lost = [d for d in held if _key(d) not in kept and _key(d) in self._held]
            if lost:
                self._lost.update(_key(d) for d in lost)
                _log.warning(
                    "leases_lost",
                    worker=self.spec.name,
                    jobs=[d.job.id for d in lost][:20],
                    count=len(lost),
                )


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
