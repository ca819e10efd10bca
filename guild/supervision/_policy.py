"""Sans-IO supervision policy: events in, decisions out, time passed in.

Rules (OTP's, plus backoff and an opt-in circuit):

* **Restart types.** ``permanent`` children are restarted after any exit;
  ``transient`` ones only after a crash; ``temporary`` ones never.
* **Strategies.** When a child must be restarted, ``one_for_one`` restarts it
  alone; ``one_for_all`` stops every other child (reverse start order) and
  restarts them all (start order); ``rest_for_one`` does that for the crashed
  child and the children started after it. Temporary siblings that are stopped
  this way are not started again.
* **Intensity.** Every restart decision of the supervisor counts once in one
  sliding window: more than ``max_restarts`` within ``period`` seconds and the
  policy decides :class:`GiveUp` — the shell stops every child in reverse start
  order and fails into its parent. Restarts whose child crashes again before
  coming up count the same. A child whose *first* start fails is not restarted
  and counts nothing: the caller gets the error (:meth:`SupervisorPolicy.failed_to_start`).
* **Backoff.** A restart waits ``initial * multiplier ** (n - 1)`` seconds,
  capped at ``maximum`` and shortened by up to ``jitter`` of itself (by the
  caller's random number), where *n* counts the restarts in the window.
* **Circuit** (per child, opt-in). ``threshold`` crashes of that child within
  ``window`` open its circuit: the child stays down for ``cooldown`` seconds
  (a worker that is down claims nothing; its jobs wait in the broker). A child
  with a circuit answers to its circuit, not to the intensity: its crashes are
  restarted with backoff (the *n*-th crash in its window waits the *n*-th
  delay) and never make the supervisor give up. Then it is half-open: exactly one trial
  start. If the trial stays up ``healthy_after`` seconds the circuit closes; if
  it crashes, the circuit opens again.

The state changes only through :meth:`SupervisorPolicy.handle`. Child states move
along :data:`TRANSITIONS`; an event that has no transition from the child's
state raises :class:`IllegalTransition` and leaves everything unchanged.
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING

import attrs

from .._backoff import exponential_delay
from .._exports import publish
from ._states import WorkerState

if TYPE_CHECKING:
    # Each method that decides imports its decisions: they load with the first
    # one a run makes (see _decisions), not with every supervisor.
    from ._decisions import Decision


class Restart(enum.Enum):
    """When a child is restarted."""

    PERMANENT = "permanent"
    TRANSIENT = "transient"
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    """Which children a restart takes with it."""

    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class ChildState(enum.Enum):
    """The states this machine keeps: a subset of :class:`WorkerState`, whose
    values (the names every output uses) they borrow."""

    STARTING = WorkerState.STARTING.value
    RUNNING = WorkerState.RUNNING.value
    RESTARTING = WorkerState.RESTARTING.value  # stopped, a start is scheduled
    OPEN = WorkerState.OPEN.value  # circuit open: down until its cooldown ends
    HALF_OPEN = WorkerState.HALF_OPEN.value  # the one trial start is running


class Event(enum.Enum):
    STARTED = "started"
    EXITED = "exited"
    CRASHED = "crashed"
    SCHEDULED_START = "scheduled_start"  # the shell starts a child the policy scheduled
    FAILED_TO_START = "failed_to_start"  # its first start raised: the caller gets the error


# Legal (state, event) pairs. Where a crash or an exit leads depends on the rules
# above, so the table names the states it may lead to; handle() picks one.
TRANSITIONS: dict[tuple[ChildState, Event], frozenset[ChildState | None]] = {
    (ChildState.STARTING, Event.STARTED): frozenset({ChildState.RUNNING}),
    (ChildState.HALF_OPEN, Event.STARTED): frozenset({ChildState.HALF_OPEN}),
    (ChildState.RESTARTING, Event.SCHEDULED_START): frozenset({ChildState.STARTING}),
    (ChildState.OPEN, Event.SCHEDULED_START): frozenset({ChildState.HALF_OPEN}),
    (ChildState.STARTING, Event.FAILED_TO_START): frozenset({None}),
    **{
        (state, event): frozenset({ChildState.RESTARTING, ChildState.OPEN, None})
        for state in (ChildState.STARTING, ChildState.RUNNING, ChildState.HALF_OPEN)
        for event in (Event.EXITED, Event.CRASHED)
    },
}


class IllegalTransition(RuntimeError):
    """An event that the child's current state does not allow."""

    def __init__(self, child: str, state: ChildState | None, event: Event) -> None:
        shown = state.value if state is not None else "absent"
        super().__init__(f"child {child!r} in state {shown!r} cannot take event {event.value!r}")
        self.child = child
        self.state = state
        self.event = event


@attrs.frozen(kw_only=True)
class Backoff:
    initial: float = attrs.field(default=0.1, validator=attrs.validators.ge(0))
    maximum: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    multiplier: float = attrs.field(default=2.0, validator=attrs.validators.ge(1))
    jitter: float = attrs.field(
        default=0.2, validator=[attrs.validators.ge(0), attrs.validators.le(1)]
    )

    def delay(self, n: int, rand: float) -> float:
        return exponential_delay(self.initial, self.multiplier, self.maximum, self.jitter, n, rand)


@attrs.frozen(kw_only=True)
class Circuit:
    """Stop restarting a child that keeps crashing, for a while (the seed's breaker)."""

    threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    window: float = attrs.field(default=60.0, validator=attrs.validators.gt(0))
    cooldown: float = attrs.field(default=60.0, validator=attrs.validators.ge(0))
    healthy_after: float = attrs.field(default=5.0, validator=attrs.validators.ge(0))


@attrs.define
class _Child:
    name: str
    restart: Restart
    circuit: Circuit | None
    order: int
    state: ChildState = ChildState.STARTING
    crashes: deque[float] = attrs.Factory(deque)
    open_until: float = 0.0
    trial_since: float | None = None
    trial_scheduled: bool = False
    last_error: str | None = None


def _whole(instance: object, attribute: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{attribute.name!r} must be a whole number, got {value!r}")


@attrs.define
class SupervisorPolicy:
    """The state machine of one supervisor.

    Raises (when made):
        ValueError: ``max_restarts`` below 0 or ``period`` not above 0 (OTP's
            limits: a zero period would count no restart and never give up).
    """

    strategy: Strategy = Strategy.ONE_FOR_ONE
    max_restarts: int = attrs.field(default=3, validator=[_whole, attrs.validators.ge(0)])
    period: float = attrs.field(default=5.0, validator=attrs.validators.gt(0))
    backoff: Backoff = attrs.Factory(Backoff)
    children: dict[str, _Child] = attrs.Factory(dict)
    restarts: deque[float] = attrs.Factory(deque)
    gave_up: bool = False
    _order: int = 0

    def add(self, name: str, restart: Restart, circuit: Circuit | None = None) -> None:
        """A child the shell is about to start."""
        if name in self.children:
            raise ValueError(f"a child named {name!r} exists already")
        self._order += 1
        self.children[name] = _Child(name=name, restart=restart, circuit=circuit, order=self._order)

    def state(self, name: str) -> ChildState | None:
        child = self.children.get(name)
        return child.state if child is not None else None

    def restarts_in_period(self, now: float) -> int:
        return sum(1 for t in self.restarts if t > now - self.period)

    def _move(self, child: _Child, event: Event, to: ChildState | None) -> None:
        allowed = TRANSITIONS.get((child.state, event))
        if allowed is None or to not in allowed:
            raise IllegalTransition(child.name, child.state, event)
        if to is None:
            del self.children[child.name]
        else:
            child.state = to

    def _require(self, name: str, event: Event) -> _Child:
        child = self.children.get(name)
        if child is None or (child.state, event) not in TRANSITIONS:
            raise IllegalTransition(name, child.state if child else None, event)
        return child

    def started(self, name: str, now: float) -> list[Decision]:
        child = self._require(name, Event.STARTED)
        if child.state is ChildState.HALF_OPEN:
            child.trial_since = now
        self._move(
            child,
            Event.STARTED,
            ChildState.HALF_OPEN if child.state is ChildState.HALF_OPEN else ChildState.RUNNING,
        )
        return []

    def scheduled_start(self, name: str) -> None:
        """The shell is starting a child the policy scheduled (restart or trial)."""
        child = self._require(name, Event.SCHEDULED_START)
        child.trial_scheduled = False
        self._move(
            child,
            Event.SCHEDULED_START,
            ChildState.HALF_OPEN if child.state is ChildState.OPEN else ChildState.STARTING,
        )

    def failed_to_start(self, name: str) -> None:
        """Its first start raised before it was up: as in OTP, that is the caller's
        error (``start_child`` raises, a supervisor's init fails), not a restart."""
        child = self._require(name, Event.FAILED_TO_START)
        self._move(child, Event.FAILED_TO_START, None)

    def exited(self, name: str, now: float, rand: float) -> list[Decision]:
        from ._decisions import Remove

        child = self._require(name, Event.EXITED)
        if child.restart is Restart.PERMANENT:
            return self._restart(child, Event.EXITED, now, rand, f"{name} exited")
        self._move(child, Event.EXITED, None)
        return [Remove(name)]

    def crashed(self, name: str, now: float, rand: float, error: str) -> list[Decision]:
        from ._decisions import OpenCircuit, Remove

        child = self._require(name, Event.CRASHED)
        child.last_error = error
        if child.restart is Restart.TEMPORARY:
            self._move(child, Event.CRASHED, None)
            return [Remove(name)]
        circuit = child.circuit
        if circuit is not None:
            child.crashes.append(now)
            while child.crashes and child.crashes[0] <= now - circuit.window:
                child.crashes.popleft()
            if child.state is ChildState.HALF_OPEN or len(child.crashes) >= circuit.threshold:
                self._move(child, Event.CRASHED, ChildState.OPEN)
                child.open_until = now + circuit.cooldown
                child.trial_since = None
                return [OpenCircuit(name, child.open_until)]
            # The circuit, not the intensity, limits this child: its crashes open
            # the circuit instead of escalating.
            return self._restart(
                child, Event.CRASHED, now, rand, f"{name} crashed: {error}", len(child.crashes)
            )
        return self._restart(child, Event.CRASHED, now, rand, f"{name} crashed: {error}")

    def _restart(
        self,
        child: _Child,
        event: Event,
        now: float,
        rand: float,
        cause: str,
        circuit_crashes: int | None = None,
    ) -> list[Decision]:
        from ._decisions import GiveUp, RestartChildren

        while self.restarts and self.restarts[0] <= now - self.period:
            self.restarts.popleft()
        if circuit_crashes is None:
            if len(self.restarts) + 1 > self.max_restarts:
                self.gave_up = True
                return [GiveUp(restarts=len(self.restarts) + 1, period=self.period, cause=cause)]
            self.restarts.append(now)
        ordered = sorted(self.children.values(), key=lambda c: c.order)
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [child]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = ordered
        else:
            group = [c for c in ordered if c.order >= child.order]
        self._move(child, event, ChildState.RESTARTING)
        siblings = [
            c
            for c in group
            if c is not child
            and c.state in (ChildState.STARTING, ChildState.RUNNING, ChildState.HALF_OPEN)
        ]
        stop = tuple(c.name for c in reversed(siblings))
        restart_names = []
        for c in group:
            if c is child:
                restart_names.append(c.name)
            elif c in siblings:
                if c.restart is Restart.TEMPORARY:
                    del self.children[c.name]
                else:
                    c.state = ChildState.RESTARTING
                    restart_names.append(c.name)
        nth = len(self.restarts) if circuit_crashes is None else circuit_crashes
        delay = self.backoff.delay(nth, rand)
        return [RestartChildren(stop=stop, start=tuple(restart_names), delay=delay, cause=cause)]

    def tick(self, now: float) -> list[Decision]:
        """Time passed: circuits whose cooldown ended get their trial; healthy trials close."""
        from ._decisions import CloseCircuit, RestartChildren

        decisions: list[Decision] = []
        for child in sorted(self.children.values(), key=lambda c: c.order):
            if (
                child.state is ChildState.OPEN
                and now >= child.open_until
                and not child.trial_scheduled
            ):
                # Exactly one trial per cooldown, however often time is ticked.
                child.trial_scheduled = True
                decisions.append(
                    RestartChildren(
                        stop=(),
                        start=(child.name,),
                        delay=0.0,
                        cause=f"{child.name} half-open trial",
                    )
                )
            elif (
                child.state is ChildState.HALF_OPEN
                and child.trial_since is not None
                and child.circuit is not None
                and now - child.trial_since >= child.circuit.healthy_after
            ):
                child.state = ChildState.RUNNING
                child.crashes.clear()
                child.trial_since = None
                decisions.append(CloseCircuit(child.name))
        return decisions

    def next_deadline(self) -> float | None:
        """The next time :meth:`tick` has something to do, if any."""
        times = []
        for child in self.children.values():
            if child.state is ChildState.OPEN and not child.trial_scheduled:
                times.append(child.open_until)
            elif (
                child.state is ChildState.HALF_OPEN
                and child.trial_since is not None
                and child.circuit is not None
            ):
                times.append(child.trial_since + child.circuit.healthy_after)
        return min(times) if times else None

    def running_in_stop_order(self) -> list[str]:
        """Every child, latest started first (the order to stop them in)."""
        return [c.name for c in sorted(self.children.values(), key=lambda c: -c.order)]


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
