"""Health policy: a snapshot of the runtime in, a verdict out. Pure; no I/O, no clock.

Rules (each one a named check in the verdict, so ``/health`` says *why*):

* **unhealthy** (HTTP 503) when
  - the broker could not be reached (``Snapshot.queues is None``);
  - a worker's broker calls fail (``worker:<name>:broker``: ``unreachable``, or
    ``damaged`` for a record of the broker's that is not what guild wrote; it
    waits either out and resumes by itself, but claims nothing meanwhile);
  - the broker reports an unhealthy issue (``broker:<name>``, e.g. Redis lost
    the jobs of a queue; it stays until acknowledged);
  - a worker is not running: its circuit is open, its supervisor gave up on
    it, it stopped or exited, its state is one this module does not know, or
    its supervisor says it runs but its task is gone (``WorkerView.alive``);
  - a worker is *stalled*: its queue has ready jobs, it has a free handler, and
    it has claimed nothing for longer than ``Thresholds.stall`` seconds.
* **degraded** (HTTP 200) when a threshold is crossed:
  - a worker's error rate over the window is above ``error_rate`` (failed
    attempts / finished attempts, once ``min_jobs`` attempts finished);
  - a worker's p95 processing time over the window is above ``p95_latency``;
  - memory use is above ``memory`` (a fraction of the limit);
  - a queue holds more than ``queue_length`` ready jobs;
  - a worker is crashed, restarting or half-open (its supervisor is on it),
    or draining (it finishes what it holds, then stops);
  - the broker reports a degraded issue (e.g. Redis without persistence, or
    with an eviction policy that may drop job keys).
* **healthy** otherwise.

The overall status is the worst status of any check. Every threshold is
exclusive ("above 1 %"): a value equal to its limit passes. Time enters only
through ``now``; the rolling windows that feed the snapshot live in
:mod:`._window` and the Trio shell that gathers it in :mod:`._monitor`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

import attrs

from .._job import QueueStats
from ..brokers._protocol import BrokerIssue
from ..supervision._states import states_judged
from ._thresholds import Thresholds as Thresholds


class Status(enum.Enum):
    """A verdict, ordered by severity."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Status.HEALTHY: 0, Status.DEGRADED: 1, Status.UNHEALTHY: 2}

UNHEALTHY_STATES = states_judged("unhealthy")
"""Supervisor states in which a worker claims nothing and will not on its own.
(Any state not a :class:`WorkerState` is judged the same way.)"""
DEGRADED_STATES = states_judged("degraded")
"""Supervisor states of a worker its supervisor is bringing back, or that is
finishing its jobs before it stops."""
CLAIMING_STATES = states_judged("healthy")
"""States in which a worker is expected to claim (and so can stall); the only
states judged healthy."""
_ISSUE_STATUS = {"info": Status.HEALTHY, "degraded": Status.DEGRADED, "unhealthy": Status.UNHEALTHY}


@attrs.frozen(kw_only=True)
class WorkerView:
    """What is known of one worker at one moment.

    Attributes:
        name: the worker's name.
        queue: the queue it claims from.
        state: its supervisor state (``running``, ``open``, ``crashed`` …).
        finished: attempts finished (done, retried or dead) within the window.
        failed: of those, attempts that failed (retried or dead).
        p50: median processing seconds within the window (None: no data).
        p95: 95th percentile processing seconds within the window (None: no data).
        p99: 99th percentile processing seconds within the window (None: no data).
            All three are true nearest-rank quantiles (see ``_quantiles``).
        active: jobs running now.
        concurrency: handler tasks (None: unknown, then it never counts as busy).
        last_claim: when it last claimed a job, or when it was first seen if it
            never has (None: unknown, then it cannot be judged stalled).
        restarts: restarts since the process started.
        last_error: why it last crashed.
        processed: jobs done since the process started.
        failed_total: failed attempts since the process started.
        dead_total: jobs it moved to the dead letters since the process started.
        broker_error: why the worker's broker calls fail, while they do.
        broker_damaged: that is a damaged record (``BrokerDataError``: a key
            another program overwrote), not an unreachable broker.
        alive: whether the worker's task is running (False: it ended, whatever
            its last supervisor state said).
    """

    name: str
    queue: str
    state: str = "running"
    finished: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    failed: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    active: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    concurrency: int | None = None
    last_claim: float | None = None
    restarts: int = 0
    last_error: str | None = None
    processed: int = 0
    failed_total: int = 0
    dead_total: int = 0
    broker_error: str | None = None
    broker_damaged: bool = False
    alive: bool = True

    @property
    def error_rate(self) -> float:
        return self.failed / self.finished if self.finished else 0.0


@attrs.frozen(kw_only=True)
class Snapshot:
    """Everything :func:`assess` looks at.

    Attributes:
        workers: by name.
        queues: broker counts by queue; None when the broker could not be reached.
        broker_error: why the broker could not be reached.
        memory: fraction of the memory limit in use (None: unknown on this system).
        issues: what the broker found wrong with its backend (see ``Diagnosable``).
    """

    workers: Mapping[str, WorkerView] = attrs.field(factory=dict)
    queues: Mapping[str, QueueStats] | None = attrs.field(factory=dict)
    broker_error: str | None = None
    memory: float | None = None
    issues: tuple[BrokerIssue, ...] = ()


@attrs.frozen(kw_only=True)
class Check:
    """One named rule's outcome."""

    name: str
    status: Status
    value: float | str | None = None
    limit: float | str | None = None
    detail: str = ""


@attrs.frozen(kw_only=True)
class Health:
    """The verdict: an overall status, the checks behind it, and the workers seen."""

    status: Status
    checks: tuple[Check, ...]
    workers: Mapping[str, WorkerView]
    queues: Mapping[str, QueueStats] | None

    @property
    def http_status(self) -> int:
        """200 when healthy or degraded (keep routing traffic), 503 when unhealthy."""
        return 503 if self.status is Status.UNHEALTHY else 200

    def to_json(self, now: float) -> dict[str, Any]:
        """The ``/health`` body: ``{status, workers, queues, checks}``."""
        return {
            "status": self.status.value,
            "workers": {name: _worker_json(w, now) for name, w in sorted(self.workers.items())},
            "queues": None
            if self.queues is None
            else {name: attrs.asdict(q) for name, q in sorted(self.queues.items())},
            "checks": {
                c.name: {
                    "status": c.status.value,
                    "value": c.value,
                    "limit": c.limit,
                    "detail": c.detail,
                }
                for c in self.checks
            },
        }


def _worker_json(worker: WorkerView, now: float) -> dict[str, Any]:
    return {
        "queue": worker.queue,
        "state": worker.state,
        "active": worker.active,
        "processed": worker.processed,
        "failed": worker.failed_total,
        "dead": worker.dead_total,
        "error_rate": round(worker.error_rate, 6),
        "p50": worker.p50,
        "p95": worker.p95,
        "p99": worker.p99,
        "restarts": worker.restarts,
        "last_error": worker.last_error,
        "broker_error": worker.broker_error,
        "alive": worker.alive,
        "idle_for": None
        if worker.last_claim is None
        else round(max(0.0, now - worker.last_claim), 3),
    }


def assess(snapshot: Snapshot, thresholds: Thresholds, now: float) -> Health:
    """Judge a snapshot against thresholds at time ``now`` (see the module rules)."""
    checks = [_broker_check(snapshot), _memory_check(snapshot.memory, thresholds)]
    checks.extend(_issue_check(issue) for issue in snapshot.issues)
    for name, stats in sorted((snapshot.queues or {}).items()):
        checks.append(_queue_check(name, stats, thresholds))
    for name, worker in sorted(snapshot.workers.items()):
        checks.extend(_worker_checks(name, worker, snapshot.queues, thresholds, now))
    status = max((c.status for c in checks), key=lambda s: s.severity)
    return Health(
        status=status, checks=tuple(checks), workers=snapshot.workers, queues=snapshot.queues
    )


def _broker_check(snapshot: Snapshot) -> Check:
    if snapshot.queues is None:
        return Check(
            name="broker",
            status=Status.UNHEALTHY,
            value="unreachable",
            detail=snapshot.broker_error or "the broker did not answer",
        )
    return Check(name="broker", status=Status.HEALTHY, value="reachable")


def _issue_check(issue: BrokerIssue) -> Check:
    return Check(
        name=f"broker:{issue.name}",
        status=_ISSUE_STATUS[issue.severity],
        value=issue.severity,
        detail=issue.detail,
    )


def _memory_check(memory: float | None, thresholds: Thresholds) -> Check:
    if memory is None:
        return Check(
            name="memory", status=Status.HEALTHY, limit=thresholds.memory, detail="unknown"
        )
    over = memory > thresholds.memory
    return Check(
        name="memory",
        status=Status.DEGRADED if over else Status.HEALTHY,
        value=round(memory, 4),
        limit=thresholds.memory,
        detail=f"{memory:.0%} of the memory limit in use" if over else "",
    )


def _queue_check(name: str, stats: QueueStats, thresholds: Thresholds) -> Check:
    if stats.broken is not None:
        # Its counts could not be read (a key of another program's): the other
        # queues' checks still stand.
        return Check(name=f"queue:{name}:length", status=Status.DEGRADED, detail=stats.broken)
    over = stats.ready > thresholds.queue_length
    return Check(
        name=f"queue:{name}:length",
        status=Status.DEGRADED if over else Status.HEALTHY,
        value=stats.ready,
        limit=thresholds.queue_length,
        detail=f"{stats.ready} jobs ready" if over else "",
    )


def _worker_checks(
    name: str,
    worker: WorkerView,
    queues: Mapping[str, QueueStats] | None,
    thresholds: Thresholds,
    now: float,
) -> list[Check]:
    prefix = f"worker:{name}"
    checks = [_state_check(prefix, worker), _worker_broker_check(prefix, worker)]
    counted = worker.finished >= thresholds.min_jobs
    rate_over = counted and worker.error_rate > thresholds.error_rate
    checks.append(
        Check(
            name=f"{prefix}:error_rate",
            status=Status.DEGRADED if rate_over else Status.HEALTHY,
            value=round(worker.error_rate, 6),
            limit=thresholds.error_rate,
            detail=f"{worker.failed} of {worker.finished} attempts failed" if rate_over else "",
        )
    )
    slow = worker.p95 is not None and worker.p95 > thresholds.p95_latency
    checks.append(
        Check(
            name=f"{prefix}:p95_latency",
            status=Status.DEGRADED if slow else Status.HEALTHY,
            value=worker.p95,
            limit=thresholds.p95_latency,
        )
    )
    checks.append(_stall_check(prefix, worker, queues, thresholds, now))
    return checks


def _state_check(prefix: str, worker: WorkerView) -> Check:
    detail = worker.last_error or ""
    if worker.state in CLAIMING_STATES and worker.state != "starting" and not worker.alive:
        # The supervisor's last word was "running", but the task has ended: a
        # worker that returned without being asked claims nothing, however it
        # ended. ("starting" is exempt: its task is registered a moment later.)
        status, detail = Status.UNHEALTHY, "the worker is not running (its task ended)"
    elif worker.state in CLAIMING_STATES:
        status = Status.HEALTHY
    elif worker.state in DEGRADED_STATES:
        status = Status.DEGRADED
    else:
        status = Status.UNHEALTHY
        detail = detail or f"the worker is {worker.state}"
    return Check(
        name=f"{prefix}:state",
        status=status,
        value=worker.state,
        detail=detail if status is not Status.HEALTHY else "",
    )


def _worker_broker_check(prefix: str, worker: WorkerView) -> Check:
    if worker.broker_error is None:
        return Check(name=f"{prefix}:broker", status=Status.HEALTHY, value="reachable")
    return Check(
        name=f"{prefix}:broker",
        status=Status.UNHEALTHY,
        value="damaged" if worker.broker_damaged else "unreachable",
        detail=worker.broker_error,
    )


def _stall_check(
    prefix: str,
    worker: WorkerView,
    queues: Mapping[str, QueueStats] | None,
    thresholds: Thresholds,
    now: float,
) -> Check:
    ready = queues[worker.queue].ready if queues and worker.queue in queues else 0
    idle = None if worker.last_claim is None else now - worker.last_claim
    # A worker whose handlers are all busy leaves jobs waiting by design; that is
    # slowness (p95, queue length), not a stall.
    busy = worker.concurrency is not None and worker.active >= worker.concurrency
    stalled = (
        ready > 0
        and idle is not None
        and idle > thresholds.stall
        and not busy
        and worker.state in CLAIMING_STATES
    )
    return Check(
        name=f"{prefix}:claiming",
        status=Status.UNHEALTHY if stalled else Status.HEALTHY,
        value=None if idle is None else round(idle, 3),
        limit=thresholds.stall,
        detail=f"{ready} jobs ready, nothing claimed for {idle:.0f}s" if stalled and idle else "",
    )
