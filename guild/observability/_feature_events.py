"""Events of the parts an app may leave unused: progress reports, limits and rate
limiters, the loop-stall watchdog, the sandbox and workflows.

Apart from :mod:`._events` because a worker emits these only once such a part
is at work: a ``guild run`` of an app that uses none of them never builds
their classes. The package ``guild.observability`` exports them all the same.
"""

from __future__ import annotations

import attrs

from .._job import Job


@attrs.frozen(kw_only=True, slots=True)
class JobProgressed:
    """A running job's progress (``guild.progress``) was written to the broker:
    at most a few times a second per job, and always its last value.

    ``at`` is when the handler reported it, in the broker's clock.
    """

    worker: str
    job: Job
    fraction: float
    message: str | None
    at: float


@attrs.frozen(kw_only=True, slots=True)
class RateLimited:
    """A task waited for a rate limiter."""

    limiter: str
    waited: float


@attrs.frozen(kw_only=True, slots=True)
class JobLimitWaited:
    """A job was admitted by its worker's :class:`guild.Limit` (``waited`` may be 0).

    ``key`` is the job's limit key (``""`` for a worker-wide limit): unbounded
    in number, so the Prometheus instrument does not make it a label.
    """

    worker: str
    job: Job
    key: str
    waited: float


@attrs.frozen(kw_only=True, slots=True)
class LoopStalled:
    """The Trio loop did not run for ``stalled`` seconds: something on it blocked
    (a sync ``time.sleep``, a CPU loop) instead of awaiting.

    ``jobs`` maps each worker to the ids of the jobs its handlers were running
    then (one of them is the likely culprit). Reported by the loop-stall
    watchdog's thread, once per stall, while the loop is still blocked.
    """

    stalled: float
    jobs: dict[str, tuple[str, ...]]
    at: float


@attrs.frozen(kw_only=True, slots=True)
class WorkerBrokerChanged:
    """What a worker's broker calls fail with changed: ``error`` says why (the
    broker unreachable, or a record of its damaged, naming the key), ``None``
    once they all work again. The worker waits meanwhile (see ``guild._outage``).

    ``at`` is when it changed, in the broker's clock.
    """

    worker: str
    queue: str
    error: str | None
    at: float


@attrs.frozen(kw_only=True, slots=True)
class SandboxRan:
    argv: tuple[str, ...]
    exit_code: int | None
    duration: float
    refused_rule: str | None = None


@attrs.frozen(kw_only=True, slots=True)
class WorkflowChanged:
    """A workflow moved: it was submitted, a step started or ended, a cancel was
    asked, a compensation started or ended, or it finished.

    ``what`` is one of ``submitted``, ``step_started``, ``step_done``,
    ``step_failed``, ``step_cancelled``, ``step_cancelling``,
    ``cancel_requested``, ``compensation_started``, ``compensation_done``,
    ``compensation_failed``, ``finished``. ``status`` is the workflow's after
    the change; ``detail`` an error or reason.
    """

    workflow_id: str
    name: str
    status: str
    what: str
    step: str | None = None
    detail: str | None = None
    at: float = 0.0


def _fixup_module_metadata() -> None:
    # Reprs, tracebacks and pickles say guild.observability.X, as for the other
    # events the package exports, however the class was first reached.
    for event in (
        JobProgressed,
        RateLimited,
        JobLimitWaited,
        SandboxRan,
        WorkflowChanged,
        WorkerBrokerChanged,
    ):
        event.__module__ = "guild.observability"


_fixup_module_metadata()
del _fixup_module_metadata
