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
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import attrs
import structlog
import trio

from .._errors import GaveUp
from .._groups import describe, unwrap
from ._policy import (
    Backoff,
    ChildState,
    Circuit,
    CloseCircuit,
    Decision,
    GiveUp,
    OpenCircuit,
    Remove,
    Restart,
    RestartChildren,
    Strategy,
    SupervisorPolicy,
)

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
    state: str
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


@attrs.define
class _Running:
    spec: ChildSpec
    generation: int
    scope: trio.CancelScope
    done: trio.Event


class _StartedFlag:
    """A task_status for a child that tells both the supervisor and whoever awaits start_child."""

    def __init__(self, on_started: Callable[[], None]) -> None:
        self._on_started = on_started

    def started(self, value: object = None) -> None:
        self._on_started()


class Supervisor:
    """Keeps children running under OTP rules; see :mod:`guild.supervision._policy`.

    Args:
        name: its name in logs and events.
        strategy, max_restarts, period: OTP's strategy and intensity.
        backoff: delay before restarts (OTP restarts at once).
        on_event: called with every :class:`ChildEvent`.
        rand: jitter source in ``[0, 1)``.

    Raises (from :meth:`run`):
        GaveUp: intensity exceeded; every child was stopped first.
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
    ) -> None:
        self.name = name
        self.policy = SupervisorPolicy(
            strategy=strategy,
            max_restarts=max_restarts,
            period=period,
            backoff=backoff or Backoff(),
        )
        self._on_event = on_event
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
        """Supervise until cancelled; raise :class:`GaveUp` when intensity is exceeded."""
        try:
            with unwrap(GaveUp):
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    try:
                        await self._loop()
                    finally:
                        # Cancelling the nursery would stop every child at once;
                        # OTP stops them one by one, latest started first, each
                        # within its grace.
                        with trio.CancelScope(shield=True):
                            await self._stop_all("shutdown")
        finally:
            self._nursery = None

    async def start_child(self, spec: ChildSpec) -> None:
        """Add and start a child; returns once it called ``task_status.started()``
        (or once it failed, which the policy then handles)."""
        if self._nursery is None:
            raise RuntimeError(f"supervisor {self.name!r} is not running")
        self._specs[spec.name] = spec
        self.policy.add(spec.name, spec.restart, spec.circuit)
        await self._start(spec.name)

    # --- the loop --------------------------------------------------------------

    async def _loop(self) -> None:
        while True:
            deadline = self.policy.next_deadline()
            outcome = None
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                outcome = await self._receive.receive()
            now = trio.current_time()
            decisions = self.policy.tick(now) if outcome is None else self._feed(outcome, now)
            for decision in decisions:
                await self._apply(decision)

    def _feed(self, outcome: _Outcome, now: float) -> list[Decision]:
        current = self._running.get(outcome.child)
        if current is None or current.generation != outcome.generation:
            return []  # a child we stopped on purpose: nothing to decide
        del self._running[outcome.child]
        if outcome.crashed:
            self._emit(outcome.child, "crashed", outcome.error, outcome.error)
            return self.policy.crashed(outcome.child, now, self._rand(), outcome.error or "")
        self._emit(outcome.child, "exited")
        return self.policy.exited(outcome.child, now, self._rand())

    async def _apply(self, decision: Decision) -> None:
        match decision:
            case RestartChildren(stop, start, delay, cause):
                for name in stop:
                    await self._stop(name, reason="supervisor restart")
                for name in start:
                    self._emit(name, "restarting", f"in {delay:.3g}s: {cause}")
                await trio.sleep(delay)
                for name in start:
                    if self.policy.state(name) in (ChildState.RESTARTING, ChildState.OPEN):
                        self.policy.scheduled_start(name)
                        if self.policy.state(name) is ChildState.HALF_OPEN:
                            self._emit(name, "half_open", "one trial start")
                        await self._start(name)
            case OpenCircuit(child, until):
                self._emit(child, "open", f"circuit open for {until - trio.current_time():.3g}s")
            case CloseCircuit(child):
                self._emit(child, "closed", "trial stayed up; circuit closed")
            case Remove(child):
                self._specs.pop(child, None)
                self._status.pop(child, None)
            case GiveUp(restarts, period, cause):
                self._emit_all("gave_up", cause)
                _log.error(
                    "supervisor_gave_up",
                    supervisor=self.name,
                    restarts=restarts,
                    period=period,
                    cause=cause,
                )
                await self._stop_all("shutdown")
                raise GaveUp(self.name, restarts, period, cause)

    # --- children --------------------------------------------------------------

    async def _start(self, name: str) -> None:
        assert self._nursery is not None
        spec = self._specs[name]
        self._generation += 1
        running = _Running(
            spec=spec,
            generation=self._generation,
            # Shielded: only the supervisor stops a child, in reverse start order.
            scope=trio.CancelScope(shield=True),
            done=trio.Event(),
        )
        self._running[name] = running
        self._emit(name, "starting")
        await self._nursery.start(self._child_task, running)

    async def _child_task(self, running: _Running, *, task_status: trio.TaskStatus[None]) -> None:
        spec = running.spec
        started = False

        def on_started() -> None:
            nonlocal started
            if not started:
                started = True
                task_status.started()
                if self._running.get(spec.name) is running:
                    self.policy.started(spec.name, trio.current_time())
                    self._emit(
                        spec.name,
                        "running"
                        if self.policy.state(spec.name) is ChildState.RUNNING
                        else "half_open",
                    )

        crashed, error = False, None
        try:
            with running.scope:
                await spec.start(task_status=_StartedFlag(on_started))
        except Exception as exc:
            crashed, error = True, describe(exc)
        finally:
            running.done.set()
            if not started:
                task_status.started()
        if running.scope.cancelled_caught and not crashed:
            return  # stopped by us
        self._send.send_nowait(_Outcome(spec.name, running.generation, crashed, started, error))

    async def _stop(self, name: str, *, reason: str) -> None:
        running = self._running.pop(name, None)
        if running is None:
            return
        running.scope.cancel(reason=reason)
        with trio.move_on_after(running.spec.shutdown_grace):
            await running.done.wait()
        self._emit(name, "stopped", reason)

    async def _stop_all(self, reason: str) -> None:
        for name in sorted(self._running, key=lambda n: -self._order(n)):
            await self._stop(name, reason=reason)

    def _order(self, name: str) -> int:
        child = self.policy.children.get(name)
        return child.order if child is not None else 0

    # --- events ----------------------------------------------------------------

    def _emit(
        self, child: str, state: str, detail: str | None = None, error: str | None = None
    ) -> None:
        restarts = self.policy.restarts_in_period(trio.current_time())
        previous = self._status.get(child)
        last_error = error or (previous.last_error if previous else None)
        self._status[child] = ChildStatus(
            state=state, restarts_in_period=restarts, last_error=last_error
        )
        facts = {"detail": detail, "last_error": last_error}
        _log.info(
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

    def _emit_all(self, state: str, detail: str) -> None:
        for name in list(self.policy.children):
            self._emit(name, state, detail)
