"""Step jobs: how a workflow's step travels as an ordinary job, and how its
handler reads what the workflow gave it.

A step (or a compensation) is a plain :class:`~guild.Job` on its queue, so it
gets that queue's retries, timeouts, limits and supervision. Its payload is an
envelope::

    {"guild_workflow": {"id": "<workflow id>", "step": "<name>", "kind": "step"},
     "input": <the step's declared payload>,
     "results": {"<dependency>": <its result>, ...}}

(a compensation's ``kind`` is ``"compensation"`` and its ``results`` hold the
step's own result under the step's name). Its id and idempotency key are fixed
by the workflow and the step, so the coordinator can enqueue it again after a
crash without a second job: the key makes the second enqueue a no-op.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import attrs

from .._errors import NotAWorkflowStep
from .._exports import publish
from .._job import MAX_KEY, MAX_QUEUE_NAME, Job, JSONValue, replace_fields
from ._spec import Workflow

ENVELOPE = "guild_workflow"
StepKind = Literal["step", "compensation"]


def step_key(workflow_id: str, step: str) -> str:
    """The idempotency key of a step's job."""
    return f"wf:{workflow_id}:{step}"


def compensation_key(workflow_id: str, step: str) -> str:
    """The idempotency key of a step's compensation job."""
    return f"wf:{workflow_id}:{step}:undo"


def step_job_id(spec: Workflow, step: str) -> str:
    """The id of a step's job: the workflow's id and the step's position.

    Workflow ids hold no ``.``, so no two workflows' job ids meet.
    """
    return f"{spec.id}.{spec.index(step)}"


def compensation_job_id(spec: Workflow, step: str) -> str:
    """The id of a step's compensation job."""
    return f"{spec.id}.{spec.index(step)}.undo"


def step_job(spec: Workflow, step: str, inputs: Mapping[str, JSONValue]) -> Job:
    """The job that runs ``step``, carrying its dependencies' results."""
    declared = spec.step(step)
    return _job(
        queue=declared.queue,
        payload={
            ENVELOPE: {"id": spec.id, "step": step, "kind": "step"},
            "input": declared.payload,
            "results": dict(inputs),
        },
        id=step_job_id(spec, step),
        key=step_key(spec.id, step),
        max_attempts=declared.max_attempts,
        timeout=declared.timeout,
        trace_id=spec.id,
    )


def compensation_job(spec: Workflow, step: str, result: JSONValue) -> Job:
    """The job that undoes ``step``, carrying the step's result."""
    name = spec.step(step).compensate
    if name is None:
        raise ValueError(f"step {step!r} declares no compensation")
    compensation = spec.compensations[name]
    return _job(
        queue=compensation.queue,
        payload={
            ENVELOPE: {"id": spec.id, "step": step, "kind": "compensation"},
            "input": compensation.payload,
            "results": {step: result},
        },
        id=compensation_job_id(spec, step),
        key=compensation_key(spec.id, step),
        max_attempts=compensation.max_attempts,
        timeout=compensation.timeout,
        trace_id=spec.id,
    )


def _job(queue: str, key: str, **fields: Any) -> Job:
    """``Job(queue=queue, key=key, ...)``, also for a workflow stored before the
    limits of new names: its queue (or its step's name, part of the key) may be
    longer. Both passed the stored rule when the workflow was read, so an over-long
    one is set past Job's checks of new input, and the workflow still finishes."""
    if len(queue) <= MAX_QUEUE_NAME and len(key) <= MAX_KEY:
        return Job(queue=queue, key=key, **fields)
    return replace_fields(Job(queue="workflow", key="workflow", **fields), queue=queue, key=key)


def workflow_of(job: Job) -> tuple[str, str, StepKind] | None:
    """``(workflow id, step, kind)`` for a workflow's job, else ``None`` (never raises)."""
    payload = job.payload
    if not isinstance(payload, dict):
        return None
    marker = payload.get(ENVELOPE)
    if not isinstance(marker, dict):
        return None
    workflow_id, step, kind = marker.get("id"), marker.get("step"), marker.get("kind")
    if not (isinstance(workflow_id, str) and isinstance(step, str)):
        return None
    if kind not in ("step", "compensation"):
        return None
    return workflow_id, step, kind


@attrs.frozen(kw_only=True)
class StepInput:
    """What a workflow gives one of its step (or compensation) jobs.

    Attributes:
        workflow_id: the workflow's id.
        step: the step's name (for a compensation: the step it undoes).
        kind: ``"step"`` or ``"compensation"``.
        input: the payload declared on the ``Step`` (or ``Compensation``).
        results: for a step, the result of each step it runs after, by name; for
            a compensation, the undone step's result under its name.

    Example::

        @app.worker("charge")
        async def charge(job: guild.Job) -> dict:
            step = guild.StepInput.of(job)
            order = step.results["reserve"]
            ...
    """

    workflow_id: str
    step: str
    kind: StepKind
    input: JSONValue = None
    results: dict[str, JSONValue] = attrs.field(factory=dict)

    @classmethod
    def of(cls, job: Job) -> StepInput:
        """Read a workflow job's payload.

        Raises:
            NotAWorkflowStep: the job was not enqueued by a workflow.
        """
        found = workflow_of(job)
        if found is None:
            raise NotAWorkflowStep(
                job.id, f"its payload has no valid {ENVELOPE!r} envelope (id, step, kind)"
            )
        results = job.payload.get("results")
        if not isinstance(results, dict):
            raise NotAWorkflowStep(job.id, "its payload's 'results' is not an object")
        workflow_id, step, kind = found
        return cls(
            workflow_id=workflow_id,
            step=step,
            kind=kind,
            input=job.payload.get("input"),
            results=results,
        )


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
