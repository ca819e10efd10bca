"""The workflow state machine: events in, decisions out, no I/O and no clock.

Rules of this file (the property tests in tests/workflows/test_machine.py check
each against a reference model written separately):

* A step starts only when every step it runs ``after`` is done; every step that
  becomes ready on an event starts on that same event (independent steps start
  together). Each step starts once.
* The first failure (a step failed, or was cancelled from outside) or a
  :class:`CancelRequested` ends the forward phase: the workflow becomes
  ``compensating``, pending steps become ``skipped`` (never started), and every
  running step gets one :class:`CancelStep`. A running step's outcome still
  counts when it lands: one that succeeds before its cancel lands is completed
  (and so compensated); one that fails or is cancelled is not.
* Once no step is running, compensations run one at a time, last completed
  first, each exactly once, for completed steps that declare one. A failed
  compensation is recorded and the next one still runs. Then the workflow ends
  ``failed`` (or ``cancelled`` when a cancel request came first) with one
  :class:`Finished`.
* An event that does not fit the state (a duplicate, or one for a step that is
  not running) changes nothing and decides nothing, so a coordinator may replay
  events after a crash. Nothing is applied to a finished workflow.

``now`` is passed in (the broker's clock) and only stamps timings.
:func:`resume` gives the decisions a restarted coordinator must redo: the start
of every running step (its job's idempotency key makes it a no-op if the job
exists), the cancels not known to have landed, and the running compensation.

State is plain data: :meth:`WorkflowState.to_json` / :meth:`WorkflowState.from_json`
round-trip it exactly, and the broker stores that text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal, cast

import attrs

from .._job import JSONValue
from ._spec import Workflow

StepState = Literal["pending", "running", "done", "failed", "cancelled", "skipped"]
CompensationState = Literal["none", "running", "done", "failed"]
WorkflowStatus = Literal["running", "compensating", "done", "failed", "cancelled"]

ACTIVE_STATUSES: frozenset[str] = frozenset({"running", "compensating"})
"""Statuses of a workflow that still has work ahead of it."""
FINISHED_STATUSES: frozenset[str] = frozenset({"done", "failed", "cancelled"})
"""Statuses a workflow never leaves."""


# --- events ---------------------------------------------------------------------------


@attrs.frozen
class StepSucceeded:
    step: str
    result: JSONValue = None
    attempts: int = 0


@attrs.frozen
class StepFailed:
    step: str
    error: str
    attempts: int = 0


@attrs.frozen
class StepCancelled:
    step: str
    attempts: int = 0


@attrs.frozen
class CompensationSucceeded:
    step: str
    attempts: int = 0


@attrs.frozen
class CompensationFailed:
    step: str
    error: str
    attempts: int = 0


@attrs.frozen
class CancelRequested:
    reason: str = "cancel requested"


Event = (
    StepSucceeded
    | StepFailed
    | StepCancelled
    | CompensationSucceeded
    | CompensationFailed
    | CancelRequested
)


# --- decisions ------------------------------------------------------------------------


@attrs.frozen
class StartStep:
    """Enqueue the step's job, with the results of the steps it runs after."""

    step: str
    inputs: dict[str, JSONValue] = attrs.field(factory=dict)


@attrs.frozen
class CancelStep:
    """Cancel the step's job (it may still finish first)."""

    step: str


@attrs.frozen
class StartCompensation:
    """Enqueue the compensation of a completed step, with that step's result."""

    step: str
    result: JSONValue = None


@attrs.frozen
class Finished:
    """The workflow ended; ``failed_step`` and ``error`` say why when it failed."""

    status: WorkflowStatus
    failed_step: str | None = None
    error: str | None = None


Decision = StartStep | CancelStep | StartCompensation | Finished


# --- state ----------------------------------------------------------------------------


@attrs.frozen
class StepRun:
    """Where one step is.

    ``compensation`` stays ``"none"`` for a step that was not compensated (it
    declares none, or it did not complete).
    """

    state: StepState = "pending"
    result: JSONValue = None
    error: str | None = None
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False
    compensation: CompensationState = "none"
    compensation_error: str | None = None
    compensation_attempts: int = 0
    compensation_started_at: float | None = None
    compensation_finished_at: float | None = None


@attrs.frozen
class WorkflowState:
    """Where a whole workflow is.

    Attributes:
        status: ``running`` (forward), ``compensating`` (winding down: cancels
            and compensations), then ``done``, ``failed`` or ``cancelled``.
        steps: each step's run, by name, in the spec's order.
        completed: the steps that completed, in order of completion.
        ending: the status it will end with once wound down (``failed`` or
            ``cancelled``), set by the first failure or cancel request.
        failed_step: the step whose failure ended the forward phase.
        error: that failure's error (or the cancel reason).
    """

    status: WorkflowStatus
    steps: Mapping[str, StepRun]
    completed: tuple[str, ...] = ()
    ending: WorkflowStatus | None = None
    failed_step: str | None = None
    error: str | None = None
    started_at: float = 0.0
    finished_at: float | None = None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    def to_json(self) -> str:
        """The state as JSON text (what the broker stores)."""
        data = attrs.asdict(self, recurse=True)
        data["completed"] = list(self.completed)
        data["steps"] = [[name, attrs.asdict(run)] for name, run in self.steps.items()]
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> WorkflowState:
        """The state that :meth:`to_json` wrote.

        Raises:
            ValueError: the text is not such a state.
        """
        try:
            data: dict[str, Any] = json.loads(text)
            steps = {name: StepRun(**run) for name, run in data.pop("steps")}
            completed = tuple(data.pop("completed"))
            return cls(steps=steps, completed=completed, **data)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"not a stored workflow state: {error!r}") from error


# --- transitions ----------------------------------------------------------------------


def start(spec: Workflow, *, now: float = 0.0) -> tuple[WorkflowState, list[Decision]]:
    """The state of a new workflow and its first decisions (start every root step)."""
    state = WorkflowState(
        status="running", steps={s.name: StepRun() for s in spec.steps}, started_at=now
    )
    return _advance(spec, state, now)


def apply(
    spec: Workflow, state: WorkflowState, event: Event, *, now: float = 0.0
) -> tuple[WorkflowState, list[Decision]]:
    """Apply one event; returns the new state and what to do about it.

    An event that does not fit (duplicate, late, for a step that is not running)
    returns ``state`` unchanged and no decisions.
    """
    if state.finished:
        return state, []
    if isinstance(event, CancelRequested):
        if state.status != "running":
            return state, []
        state, cancels = _wind_down(state, "cancelled", None, event.reason)
        state, more = _advance(spec, state, now)
        return state, cancels + more
    run = state.steps.get(event.step)
    if run is None:
        return state, []
    if isinstance(event, CompensationSucceeded | CompensationFailed):
        if run.compensation != "running":
            return state, []
        failed = isinstance(event, CompensationFailed)
        changed = attrs.evolve(
            run,
            compensation="failed" if failed else "done",
            compensation_error=event.error if isinstance(event, CompensationFailed) else None,
            compensation_attempts=event.attempts,
            compensation_finished_at=now,
        )
        return _advance(spec, _with(state, event.step, changed), now)
    if run.state != "running":
        return state, []
    return _step_finished(spec, state, run, event, now)


def _step_finished(
    spec: Workflow,
    state: WorkflowState,
    run: StepRun,
    event: StepSucceeded | StepFailed | StepCancelled,
    now: float,
) -> tuple[WorkflowState, list[Decision]]:
    name = event.step
    common: dict[str, Any] = {"attempts": event.attempts, "finished_at": now}
    if isinstance(event, StepSucceeded):
        state = _with(state, name, attrs.evolve(run, state="done", result=event.result, **common))
        state = attrs.evolve(state, completed=(*state.completed, name))
        return _advance(spec, state, now)
    if isinstance(event, StepFailed):
        state = _with(state, name, attrs.evolve(run, state="failed", error=event.error, **common))
        error = event.error
    else:
        error = "cancelled" if run.cancel_requested else "the step's job was cancelled"
        state = _with(state, name, attrs.evolve(run, state="cancelled", error=error, **common))
    cancels: list[Decision] = []
    if state.status == "running":
        state, cancels = _wind_down(state, "failed", name, error)
    state, more = _advance(spec, state, now)
    return state, cancels + more


def _with(state: WorkflowState, name: str, run: StepRun) -> WorkflowState:
    steps = dict(state.steps)
    steps[name] = run
    return attrs.evolve(state, steps=steps)


def _wind_down(
    state: WorkflowState, ending: WorkflowStatus, failed_step: str | None, error: str
) -> tuple[WorkflowState, list[Decision]]:
    steps: dict[str, StepRun] = {}
    cancels: list[Decision] = []
    for name, run in state.steps.items():
        if run.state == "pending":
            run = attrs.evolve(run, state="skipped")
        elif run.state == "running":
            run = attrs.evolve(run, cancel_requested=True)
            cancels.append(CancelStep(name))
        steps[name] = run
    wound = attrs.evolve(
        state,
        status="compensating",
        steps=steps,
        ending=ending,
        failed_step=failed_step,
        error=error,
    )
    return wound, cancels


def _advance(
    spec: Workflow, state: WorkflowState, now: float
) -> tuple[WorkflowState, list[Decision]]:
    """Start what the state allows: ready steps going forward, else the next
    compensation, else the end."""
    if state.status == "running":
        if all(run.state == "done" for run in state.steps.values()):
            finished = attrs.evolve(state, status="done", finished_at=now)
            return finished, [Finished("done")]
        return _start_ready(spec, state, now)
    runs = state.steps.values()
    if any(run.state == "running" or run.compensation == "running" for run in runs):
        return state, []
    for name in reversed(state.completed):
        run = state.steps[name]
        if spec.step(name).compensate is not None and run.compensation == "none":
            started = attrs.evolve(run, compensation="running", compensation_started_at=now)
            return _with(state, name, started), [StartCompensation(name, run.result)]
    status: WorkflowStatus = state.ending or "failed"
    finished = attrs.evolve(state, status=status, finished_at=now)
    return finished, [Finished(status, state.failed_step, state.error)]


def _start_ready(
    spec: Workflow, state: WorkflowState, now: float
) -> tuple[WorkflowState, list[Decision]]:
    steps = state.steps
    ready = [
        step
        for step in spec.steps
        if steps[step.name].state == "pending" and all(steps[d].state == "done" for d in step.after)
    ]
    if not ready:
        return state, []
    changed = dict(steps)
    decisions: list[Decision] = []
    for step in ready:
        changed[step.name] = attrs.evolve(steps[step.name], state="running", started_at=now)
        decisions.append(StartStep(step.name, {d: steps[d].result for d in step.after}))
    return attrs.evolve(state, steps=changed), decisions


def resume(spec: Workflow, state: WorkflowState) -> list[Decision]:
    """What a (re)started coordinator redoes for a stored state.

    Every running step is started again (a no-op where its job exists: the
    job's idempotency key holds it), then cancelled again if a cancel was asked
    (a cancel that finds the job finished does nothing); the running
    compensation is started again. Nothing for a finished workflow.
    """
    if state.finished:
        return []
    decisions: list[Decision] = []
    for step in spec.steps:
        run = state.steps[step.name]
        if run.state == "running":
            decisions.append(StartStep(step.name, {d: state.steps[d].result for d in step.after}))
            if run.cancel_requested:
                decisions.append(CancelStep(step.name))
        if run.compensation == "running":
            decisions.append(StartCompensation(step.name, run.result))
    return decisions


def running_steps(state: WorkflowState) -> list[str]:
    """Steps whose jobs the coordinator waits for."""
    return [name for name, run in state.steps.items() if run.state == "running"]


def running_compensations(state: WorkflowState) -> list[str]:
    """Steps whose compensation jobs the coordinator waits for."""
    return [name for name, run in state.steps.items() if run.compensation == "running"]


def cast_status(value: str) -> WorkflowStatus:
    """A stored status string as a :data:`WorkflowStatus`.

    Raises:
        ValueError: it is none.
    """
    if value not in ACTIVE_STATUSES | FINISHED_STATUSES:
        raise ValueError(f"not a workflow status: {value!r}")
    return cast("WorkflowStatus", value)
