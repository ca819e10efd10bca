"""The Trio shell of a supervisor: runs children as tasks, feeds the policy, acts.

One loop reads child events (started, exited, crashed) from a channel, hands
them to :class:`SupervisorPolicy`, and carries out its decisions through a
small table of handlers. Each child runs in its own cancel scope inside the
supervisor's nursery, so stopping one is a cancellation with a reason
("supervisor restart", "shutdown") and nothing outlives the supervisor.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import structlog
import trio

from .._errors import GaveUp
from .._exports import publish
from .._groups import describe, leaves, unwrap
from ._policy import (
    Backoff,
    ChildState,
    Circuit,
    Restart,
    Strategy,
    SupervisorPolicy,
)
from ._states import WorkerState

if TYPE_CHECKING:
    from ._decisions import Decision

_log = structlog.get_logger("guild.supervision")


class _Start(Protocol):
    def __call__(self, *, task_status: trio.TaskStatus[Any] = ...) -> Awaitable[object]: ...


@attrs.frozen(kw_only=True)
class ChildSpec:
    """A child of a supervisor.

    Attributes:
        name: unique among its siblings.
        start: ``async def start(*, task_status=trio.TASK_STATUS_IGNORED)``; calls
            ``task_status.started()`` when ready. Returning is a normal exit,
            raising is a crash.
        restart: when it is restarted (see :class:`Restart`).
        circuit: opt-in circuit for a child whose crashes mean a dependency is down.
        shutdown_grace: seconds it gets to finish after being told to stop.
    """

    name: str
    start: Callable[..., Awaitable[object]]
    restart: Restart = Restart.PERMANENT
    circuit: Circuit | None = None
    shutdown_grace: float = 5.0


@attrs.frozen(kw_only=True)
class ChildEvent:
    """One transition of one child, for logs, metrics, /health and /events."""

    supervisor: str
    child: str
    state: WorkerState
    at: float
    detail: str | None = None
    restarts_in_period: int = 0
    last_error: str | None = None


@attrs.frozen(kw_only=True)
class ChildStatus:
    state: str
    restarts_in_period: int
    last_error: str | None


@attrs.frozen
class _Outcome:
    child: str
    generation: int
    crashed: bool
    started: bool
    error: str | None
    detail: str | None = None


@attrs.define
class _Running:
    spec: ChildSpec
    generation: int
    scope: trio.CancelScope
    done: trio.Event
    # Set once it called task_status.started() or ended, whichever came first:
    # what the starter waits for (cancellably, so no start can hold up shutdown).
    settled: trio.Event
    first: bool  # its first start: a failure is the caller's error, not a restart
    up: bool = False
    value: object = None  # what it passed to task_status.started()
    failure: Exception | None = None


def _only(error: BaseException, kind: type[BaseException]) -> bool:
    found = leaves(error) if isinstance(error, BaseExceptionGroup) else [error]
    return bool(found) and all(isinstance(leaf, kind) for leaf in found)


class _StartedFlag:
    """A task_status for a child that tells both the supervisor and whoever awaits start_child."""

    def __init__(self, on_started: Callable[[object], None]) -> None:
        self._on_started = on_started

    def started(self, value: object = None) -> None:
        self._on_started(value)


class Supervisor:
    """Keeps children running under OTP rules; see :mod:`guild.supervision._policy`.

    Args:
        name: its name in logs and events.
        strategy, max_restarts, period: OTP's strategy and intensity.
        backoff: delay before restarts (OTP restarts at once).
        on_event: called with every :class:`ChildEvent`.
        rand: jitter source in ``[0, 1)``.

        children: started in order by :meth:`run` before it reports started
            (OTP's init); one that fails its first start fails the supervisor.
        quiet: states whose transitions are logged at debug, not info (a
            service's routine start is no news beside the run's banner).

    Raises:
        ValueError: ``max_restarts < 0``, ``period <= 0``, or two children share a name.

    Raises (from :meth:`run`):
        GaveUp: intensity exceeded; every child was stopped first. Raised as it
            is, never inside an exception group, so ``except GaveUp`` catches it.
        Exception: a child of ``children`` failed its first start (the child's
            own error, with a note naming it); the ones started before it were
            stopped, latest first.
    """

    def __init__(
        self,
        name: str,
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 3,
        period: float = 5.0,
        backoff: Backoff | None = None,
        on_event: Callable[[ChildEvent], None] | None = None,
        rand: Callable[[], float] = random.random,
        children: Sequence[ChildSpec] = (),
        quiet: Collection[WorkerState] = (),
    ) -> None:
        names = [spec.name for spec in children]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"supervisor {name!r}: children named {duplicated} more than once")
        self._initial = tuple(children)
        self.name = name
        self.policy = SupervisorPolicy(
            strategy=strategy,
            max_restarts=max_restarts,
            period=period,
            backoff=backoff or Backoff(),
        )
        self._on_event = on_event
        self._quiet = frozenset(quiet)
        self._rand = rand
        self._specs: dict[str, ChildSpec] = {}
        self._running: dict[str, _Running] = {}
        self._generation = 0
        self._nursery: trio.Nursery | None = None
        self._send, self._receive = trio.open_memory_channel[_Outcome](math.inf)
        self._status: dict[str, ChildStatus] = {}

    # --- public ----------------------------------------------------------------

    def snapshot(self) -> dict[str, ChildStatus]:
        """Each child's state, restarts in the current period, and last error."""
        return dict(self._status)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start ``children``, then supervise until cancelled; raise :class:`GaveUp`
        when intensity is exceeded."""
        if self._nursery is not None:
            raise RuntimeError(f"supervisor {self.name!r} is running already")
        outcome: BaseException | None = None
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    outcome = await self._init()
                    if outcome is None:
                        task_status.started()
                        outcome = await self._loop()
                finally:
                    # Cancelling the nursery would stop every child at once;
                    # OTP stops them one by one, latest started first, each
                    # within its grace.
                    with trio.CancelScope(shield=True):
                        await self._stop_all("shutdown")
        finally:
            self._nursery = None
        # Raised here, outside the nursery, so it is not wrapped in a group.
        if outcome is not None:
            raise outcome

    async def start_child(self, spec: ChildSpec) -> Any:
        """Add and start a child; returns once it called ``task_status.started()``,
        with the value it passed there (as ``nursery.start`` does).

        Raises:
            RuntimeError: the supervisor is not running.
            ValueError: a child of that name exists (running, or waiting for a
                restart); nothing was changed.
            Exception: the child failed its first start (its own error): as in
                OTP it is not restarted, counts nothing, and is not kept.
        """
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        if spec.name in self._specs or self.policy.state(spec.name) is not None:
            now = "running" if spec.name in self._running else "present"
            raise ValueError(
                f"supervisor {self.name!r} has a child named {spec.name!r} already ({now});"
                " the new spec was refused and nothing changed"
            )
        self._specs[spec.name] = spec
        self.policy.add(spec.name, spec.restart, spec.circuit)
        return await self._start(spec.name, first=True)

    async def _init(self) -> Exception | None:
        for spec in self._initial:
            try:
                await self.start_child(spec)
            except Exception as error:
                _log.error(
                    "supervisor_failed_to_start",
                    supervisor=self.name,
                    child=spec.name,
                    error=describe(error),
                )
                return error
        return None

    # --- the loop --------------------------------------------------------------

    async def _loop(self) -> GaveUp:
        while True:
            deadline = self.policy.next_deadline()
            outcome = None
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                outcome = await self._receive.receive()
            now = trio.current_time()
            decisions = self.policy.tick(now) if outcome is None else self._feed(outcome, now)
            for decision in decisions:
                gave_up = await self._apply(decision, now)
                if gave_up is not None:
                    return gave_up

    def _feed(self, outcome: _Outcome, now: float) -> list[Decision]:
        current = self._running.get(outcome.child)
        if current is None or current.generation != outcome.generation:
            return []  # a child we stopped on purpose: nothing to decide
        del self._running[outcome.child]
        if outcome.crashed:
            self._emit(outcome.child, WorkerState.CRASHED, outcome.error, outcome.error)
            return self.policy.crashed(outcome.child, now, self._rand(), outcome.error or "")
        self._emit(outcome.child, WorkerState.EXITED, outcome.detail)
        return self.policy.exited(outcome.child, now, self._rand())

    async def _apply(self, decision: Decision, now: float) -> GaveUp | None:
        # Here, not at the top: loaded with the policy's first decision.
        from ._decisions import CloseCircuit, GiveUp, OpenCircuit, Remove, RestartChildren

        match decision:
            case RestartChildren(stop, start, delay, cause):
                for name in stop:
                    await self._stop(name, reason="supervisor restart")
                    if self.policy.state(name) is None:
                        # A temporary sibling: stopped for good, so it goes (as in OTP).
                        self._forget(name)
                for name in start:
                    self._emit(name, WorkerState.RESTARTING, f"in {delay:.3g}s: {cause}")
                await trio.sleep(delay)
                for name in start:
                    if self.policy.state(name) in (ChildState.RESTARTING, ChildState.OPEN):
                        self.policy.scheduled_start(name)
                        if self.policy.state(name) is ChildState.HALF_OPEN:
                            self._emit(name, WorkerState.HALF_OPEN, "one trial start")
                        await self._start(name)
            case OpenCircuit(child, until):
                # `now` is when the policy decided: reading the clock again would
                # report a cooldown shortened by however long logging took.
                self._emit(child, WorkerState.OPEN, f"circuit open for {until - now:.3g}s")
            case CloseCircuit(child):
                self._emit(child, WorkerState.CLOSED, "trial stayed up; circuit closed")
            case Remove(child):
                self._forget(child)
            case GiveUp(restarts, period, cause):
                self._emit_all(WorkerState.GAVE_UP, cause)
                _log.error(
                    "supervisor_gave_up",
                    supervisor=self.name,
                    restarts=restarts,
                    period=period,
                    cause=cause,
                )
                return GaveUp(self.name, restarts, period, cause)
        return None

    def _forget(self, name: str) -> None:
        self._specs.pop(name, None)
        self._status.pop(name, None)

    # --- children --------------------------------------------------------------

    async def _start(self, name: str, *, first: bool = False) -> object:
        assert self._nursery is not None
        spec = self._specs[name]
        self._generation += 1
        running = _Running(
            spec=spec,
            generation=self._generation,
            # Shielded: only the supervisor stops a child, in reverse start order.
            scope=trio.CancelScope(shield=True),
            done=trio.Event(),
            settled=trio.Event(),
            first=first,
        )
        self._running[name] = running
        self._emit(name, WorkerState.STARTING)
        # Not nursery.start(): that would wait out a start that never reports,
        # uncancellably (the child's scope is shielded). Waiting here can be
        # cancelled, and the child, already in _running, is then stopped with
        # the rest, within its grace.
        self._nursery.start_soon(self._child_task, running, name=f"{self.name}/{name}")
        await running.settled.wait()
        if running.failure is not None:
            running.failure.add_note(
                f"child {name!r} of supervisor {self.name!r} failed its first start"
            )
            raise running.failure
        return running.value

    async def _child_task(self, running: _Running) -> None:
        spec = running.spec

        def on_started(value: object) -> None:
            if not running.up:
                running.up = True
                running.value = value
                running.settled.set()
                if self._running.get(spec.name) is running:
                    self.policy.started(spec.name, trio.current_time())
                    self._emit(
                        spec.name,
                        WorkerState.RUNNING
                        if self.policy.state(spec.name) is ChildState.RUNNING
                        else WorkerState.HALF_OPEN,
                    )

        crashed, error, detail = False, None, None
        try:
            with running.scope:
                await spec.start(task_status=_StartedFlag(on_started))
        except Exception as exc:
            if _only(exc, GaveUp):
                # A child supervisor that gave up exits as OTP's `shutdown`: not a
                # crash, so a transient parent lets it go, a permanent one restarts it.
                detail = f"shutdown: {describe(exc)}"
            elif running.first and not running.up and self._running.get(spec.name) is running:
                self._failed_to_start(running, exc)
                return
            else:
                crashed, error = True, describe(exc)
        except BaseException as exc:
            if running.scope.cancel_called or not _only(exc, trio.Cancelled):
                raise
            # A Cancelled that no scope of ours sent (one leaked from another
            # task): the child ended without being asked to, which is a crash.
            crashed = True
            error = f"LeakedCancellation: {spec.name} ended by a cancellation that was not its own"
        finally:
            running.done.set()
            running.settled.set()
        if running.scope.cancelled_caught and not crashed:
            return  # stopped by us
        self._send.send_nowait(
            _Outcome(spec.name, running.generation, crashed, running.up, error, detail)
        )

    def _failed_to_start(self, running: _Running, error: Exception) -> None:
        name = running.spec.name
        del self._running[name]
        self.policy.failed_to_start(name)
        self._emit(name, WorkerState.FAILED_TO_START, describe(error), describe(error))
        self._forget(name)
        running.failure = error

    async def _stop(self, name: str, *, reason: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.scope.cancel(reason=reason)
        with trio.move_on_after(running.spec.shutdown_grace):
            await running.done.wait()
        self._emit(name, WorkerState.STOPPED, reason)

    async def _stop_all(self, reason: str) -> None:
        for name in sorted(self._running, key=lambda n: -self._order(n)):
            await self._stop(name, reason=reason)

    def _order(self, name: str) -> int:
        child = self.policy.children.get(name)
        return child.order if child is not None else 0

    # --- events ----------------------------------------------------------------

    def _emit(
        self, child: str, state: WorkerState, detail: str | None = None, error: str | None = None
    ) -> None:
        restarts = self.policy.restarts_in_period(trio.current_time())
        previous = self._status.get(child)
        last_error = error or (previous.last_error if previous else None)
        self._status[child] = ChildStatus(
            state=state, restarts_in_period=restarts, last_error=last_error
        )
        facts = {"detail": detail, "last_error": last_error}
        log = _log.debug if state in self._quiet else _log.info
        log(
            "child_" + state,
            supervisor=self.name,
            child=child,
            restarts_in_period=restarts,
            **{name: value for name, value in facts.items() if value is not None},
        )
        if self._on_event is not None:
            self._on_event(
                ChildEvent(
                    supervisor=self.name,
                    child=child,
                    state=state,
                    at=time.time(),
                    detail=detail,
                    restarts_in_period=restarts,
                    last_error=last_error,
                )
            )

    def _emit_all(self, state: WorkerState, detail: str) -> None:
        for name in list(self.policy.children):
            self._emit(name, state, detail)


# The transitions of a service worth no info line: its routine start and stop,
# and a first start that fails (raised to the caller, which reports it).
_QUIET_SERVICE_STATES = (
    WorkerState.STARTING,
    WorkerState.RUNNING,
    WorkerState.STOPPED,
    WorkerState.FAILED_TO_START,
)


@asynccontextmanager
async def open_services(
    name: str,
    *,
    max_restarts: int = 5,
    period: float = 30.0,
    backoff: Backoff | None = None,
    on_event: Callable[[ChildEvent], None] | None = None,
) -> AsyncIterator[Supervisor]:
    """A running supervisor for system tasks: the one path every such task of a
    run takes (``guild run``'s HTTP server, rollout recorder and canary
    controller through :meth:`guild.Guild.open_services`; the HTTP view of
    ``--processes N``'s parent).

    Each is independent (one for one): a crash restarts that task alone, after
    ``backoff``, logged with its cause (``child_crashed``); past ``max_restarts``
    within ``period`` it raises :class:`GaveUp`, as it is. Leaving the block
    stops them, latest started first.
    """
    supervisor = Supervisor(
        name,
        strategy=Strategy.ONE_FOR_ONE,
        max_restarts=max_restarts,
        period=period,
        backoff=backoff,
        on_event=on_event,
        quiet=_QUIET_SERVICE_STATES,
    )
    with unwrap(GaveUp):
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            try:
                yield supervisor
            finally:
                nursery.cancel_scope.cancel(reason="run ended")


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
