"""One transition of a stored workflow: read what happened, and act on decisions.

Shared by the app's calls (submit, cancel) and the coordinator: how a stored
record becomes a spec and a state, how step jobs' results become machine
events, how a transition is told to the instruments, and how decisions are
carried out (enqueue, then cancel).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from .._errors import BrokerError
from .._job import Job, JobStatus, Result
from ..brokers._protocol import Broker
from ..observability._feature_events import WorkflowChanged
from ._machine import (
    CancelStep,
    CompensationFailed,
    CompensationSucceeded,
    Decision,
    Event,
    StartCompensation,
    StartStep,
    StepCancelled,
    StepFailed,
    StepSucceeded,
    WorkflowState,
    running_compensations,
    running_steps,
)
from ._spec import Workflow
from ._steps import compensation_job, compensation_job_id, step_job, step_job_id
from ._store import WorkflowRecord, WorkflowStore

MAX_RACES = 50
"""Compare-and-set attempts before a writer gives up on one change."""

Emit = Callable[[WorkflowChanged], None]


def store_of(broker: Broker) -> WorkflowStore:
    """The broker as a workflow store.

    Raises:
        BrokerError: the broker keeps no workflows.
    """
    if not isinstance(broker, WorkflowStore):
        raise BrokerError(
            f"{type(broker).__name__} keeps no workflows (it lacks the WorkflowStore"
            " methods: create_workflow, get_workflow, list_workflows, update_workflow)"
        )
    return broker


@attrs.frozen
class Loaded:
    record: WorkflowRecord
    spec: Workflow
    state: WorkflowState


def load(record: WorkflowRecord, specs: dict[str, Workflow] | None = None) -> Loaded:
    spec = specs.get(record.id) if specs is not None else None
    if spec is None:
        spec = Workflow.from_json(record.spec)
        if specs is not None:
            specs[record.id] = spec
    return Loaded(record, spec, WorkflowState.from_json(record.state))


def _step_event(step: str, result: Result) -> Event | None:
    if result.status is JobStatus.DONE:
        return StepSucceeded(step, result.value, result.attempts)
    if result.status is JobStatus.DEAD:
        return StepFailed(step, result.error or "dead", result.attempts)
    if result.status is JobStatus.CANCELLED:
        return StepCancelled(step, result.attempts)
    return None


def _compensation_event(step: str, result: Result) -> Event | None:
    if result.status is JobStatus.DONE:
        return CompensationSucceeded(step, result.attempts)
    if result.status in (JobStatus.DEAD, JobStatus.CANCELLED):
        error = result.error or result.status.value
        return CompensationFailed(step, error, result.attempts)
    return None


@runtime_checkable
class ManyResults(Protocol):
    """A broker that reads the results of many jobs in one round trip."""

    async def get_results(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """The stored results of ``job_ids``; a job with none is left out."""
        ...


def in_flight(loaded: Loaded) -> list[str]:
    """The ids of the jobs of a workflow's running steps and compensations."""
    spec, state = loaded.spec, loaded.state
    return [
        *(step_job_id(spec, step) for step in running_steps(state)),
        *(compensation_job_id(spec, step) for step in running_compensations(state)),
    ]


async def results_of(broker: Broker, job_ids: Sequence[str]) -> dict[str, Result]:
    """The stored results of ``job_ids``: one round trip where the broker allows."""
    if isinstance(broker, ManyResults):
        return await broker.get_results(job_ids)
    found: dict[str, Result] = {}
    for job_id in job_ids:
        result = await broker.get_result(job_id)
        if result is not None:
            found[job_id] = result
    return found


def events_from(loaded: Loaded, results: Mapping[str, Result]) -> list[Event]:
    """Events for the in-flight jobs of a workflow that have a result in ``results``."""
    spec, state = loaded.spec, loaded.state
    events: list[Event] = []
    for step in running_steps(state):
        result = results.get(step_job_id(spec, step))
        event = _step_event(step, result) if result is not None else None
        if event is not None:
            events.append(event)
    for step in running_compensations(state):
        result = results.get(compensation_job_id(spec, step))
        event = _compensation_event(step, result) if result is not None else None
        if event is not None:
            events.append(event)
    return events


async def finished_jobs(broker: Broker, loaded: Loaded) -> list[Event]:
    """Events for the in-flight jobs of a workflow that have a result."""
    return events_from(loaded, await results_of(broker, in_flight(loaded)))


def transitions(
    events: Sequence[Event], decisions: Sequence[Decision]
) -> list[tuple[str, str | None, str | None]]:
    """``(what, step, detail)`` for the workflow events of one transition."""
    out: list[tuple[str, str | None, str | None]] = []
    for event in events:
        if isinstance(event, StepSucceeded):
            out.append(("step_done", event.step, None))
        elif isinstance(event, StepFailed):
            out.append(("step_failed", event.step, event.error))
        elif isinstance(event, StepCancelled):
            out.append(("step_cancelled", event.step, None))
        elif isinstance(event, CompensationSucceeded):
            out.append(("compensation_done", event.step, None))
        elif isinstance(event, CompensationFailed):
            out.append(("compensation_failed", event.step, event.error))
        else:
            out.append(("cancel_requested", None, event.reason))
    for decision in decisions:
        if isinstance(decision, StartStep):
            out.append(("step_started", decision.step, None))
        elif isinstance(decision, CancelStep):
            out.append(("step_cancelling", decision.step, None))
        elif isinstance(decision, StartCompensation):
            out.append(("compensation_started", decision.step, None))
        else:
            out.append(("finished", decision.failed_step, decision.error))
    return out


def announce(
    emit: Emit | None,
    loaded: Loaded,
    state: WorkflowState,
    changes: Sequence[tuple[str, str | None, str | None]],
    at: float,
) -> None:
    if emit is None:
        return
    for what, step, detail in changes:
        emit(
            WorkflowChanged(
                workflow_id=loaded.spec.id,
                name=loaded.spec.name,
                status=state.status,
                what=what,
                step=step,
                detail=detail,
                at=at,
            )
        )


async def execute(broker: Broker, spec: Workflow, decisions: Sequence[Decision]) -> None:
    """Act on decisions: enqueue step and compensation jobs (one call), then cancel.

    Enqueueing first matters when a coordinator redoes in-flight work: the job
    of a step whose cancel was asked must exist for the cancel to reach it.
    """
    jobs: list[Job] = []
    cancels: list[str] = []
    for decision in decisions:
        if isinstance(decision, StartStep):
            jobs.append(step_job(spec, decision.step, decision.inputs))
        elif isinstance(decision, StartCompensation):
            jobs.append(compensation_job(spec, decision.step, decision.result))
        elif isinstance(decision, CancelStep):
            cancels.append(step_job_id(spec, decision.step))
    if jobs:
        await broker.enqueue(jobs)
    if cancels:
        await broker.cancel(cancels)
