"""What ``app.workflow(id)`` shows: a read-only picture of one stored workflow."""

from __future__ import annotations

from typing import Any

import attrs

from .._exports import publish
from .._job import JSONValue
from ._machine import CompensationState, StepState, WorkflowState, WorkflowStatus, cast_status
from ._spec import Workflow
from ._steps import compensation_job_id, step_job_id
from ._store import WorkflowRecord


@attrs.frozen(kw_only=True)
class CompensationView:
    """The undo of one step.

    ``state`` is ``"none"`` until it starts (and stays so for a step that did
    not complete, or when the workflow succeeded).
    """

    name: str
    queue: str
    job_id: str
    state: CompensationState
    error: str | None
    attempts: int
    started_at: float | None
    finished_at: float | None


@attrs.frozen(kw_only=True)
class StepView:
    """One step: where it is, and what came of it.

    Attributes:
        state: ``pending``, ``running``, ``done``, ``failed``, ``cancelled`` or
            ``skipped`` (never started, because the workflow stopped first).
        attempts: runs of its job (its queue's retries) when it finished.
        started_at: when its job was enqueued (broker clock).
        finished_at: when its outcome was seen.
        result: what its handler returned (when done).
        error: why it failed or was cancelled.
        compensation: its undo, if it declares one.
    """

    name: str
    queue: str
    after: tuple[str, ...]
    job_id: str
    state: StepState
    attempts: int
    started_at: float | None
    finished_at: float | None
    result: JSONValue
    error: str | None
    compensation: CompensationView | None


@attrs.frozen(kw_only=True)
class WorkflowView:
    """One workflow as stored: its status and each step's.

    Attributes:
        status: ``running``, ``compensating`` (a step failed or a cancel was
            asked: running steps are being cancelled and completed ones
            undone), ``done``, ``failed`` or ``cancelled``.
        failed_step: the step whose failure stopped it.
        error: that step's error, or the cancel's reason.
        completed: the steps that completed, in order of completion.
        version: the stored record's version (every change adds one).
    """

    id: str
    name: str
    status: WorkflowStatus
    failed_step: str | None
    error: str | None
    steps: tuple[StepView, ...]
    completed: tuple[str, ...]
    created_at: float
    updated_at: float
    started_at: float
    finished_at: float | None
    version: int

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed", "cancelled")

    def step(self, name: str) -> StepView:
        """The step called ``name``.

        Raises:
            KeyError: no such step.
        """
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(name)

    @classmethod
    def from_record(cls, record: WorkflowRecord) -> WorkflowView:
        """The view of a stored record (``guild workflow show`` builds it so).

        Raises:
            ValueError: the record's spec or state is not one a coordinator wrote.
        """
        spec = Workflow.from_json(record.spec)
        state = WorkflowState.from_json(record.state)
        return cls(
            id=record.id,
            name=record.name,
            status=cast_status(record.status),
            failed_step=state.failed_step,
            error=state.error,
            steps=tuple(_step_view(spec, state, s.name) for s in spec.steps),
            completed=state.completed,
            created_at=record.created_at,
            updated_at=record.updated_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            version=record.version,
        )

    def to_dict(self) -> dict[str, Any]:
        """The view as plain JSON-ready data (``guild workflow show --json``)."""
        data = attrs.asdict(self, recurse=True)
        data["completed"] = list(self.completed)
        for step in data["steps"]:
            step["after"] = list(step["after"])
        return data


def _step_view(spec: Workflow, state: WorkflowState, name: str) -> StepView:
    step = spec.step(name)
    run = state.steps[name]
    undo: CompensationView | None = None
    if step.compensate is not None:
        undo = CompensationView(
            name=step.compensate,
            queue=spec.compensations[step.compensate].queue,
            job_id=compensation_job_id(spec, name),
            state=run.compensation,
            error=run.compensation_error,
            attempts=run.compensation_attempts,
            started_at=run.compensation_started_at,
            finished_at=run.compensation_finished_at,
        )
    return StepView(
        name=name,
        queue=step.queue,
        after=step.after,
        job_id=step_job_id(spec, name),
        state=run.state,
        attempts=run.attempts,
        started_at=run.started_at,
        finished_at=run.finished_at,
        result=run.result,
        error=run.error,
        compensation=undo,
    )


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
