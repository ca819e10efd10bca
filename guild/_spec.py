"""WorkerSpec: everything that defines one worker, validated at construction."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import attrs

from ._exports import publish
from ._job import MAX_QUEUE_NAME, Job, check_field, check_stored_queue_name
from ._limits import Limit
from ._retry import RetryPolicy

Handler = Callable[[Job], Awaitable[Any]]
"""A job handler: ``async def handler(job: guild.Job) -> result``."""


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


def _positive(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number, got {value!r}")


def _worker_name(spec: WorkerSpec, _: attrs.Attribute[Any], name: str) -> None:
    # The default, the queue's own name, was checked as the queue; a name of its
    # own is new, and follows the rule of a new queue name.
    if name != spec.queue:
        check_field("worker name", name, MAX_QUEUE_NAME)


def _to_tuple(value: Iterable[type[BaseException]]) -> tuple[type[BaseException], ...]:
    return tuple(value)


def _exception_types(
    _: object, attribute: attrs.Attribute[Any], value: tuple[type[BaseException], ...]
) -> None:
    for item in value:
        if not (isinstance(item, type) and issubclass(item, BaseException)):
            raise TypeError(f"{attribute.name} must hold exception types, got {item!r}")


@attrs.frozen(kw_only=True)
class WorkerSpec:
    """One worker: a queue, its handler, and how the handler runs.

    Attributes:
        queue: the queue it takes jobs from.
        handler: ``async def handler(job) -> result``.
        name: the worker's name in logs, metrics and supervision (default: the queue).
        concurrency: handler tasks, so jobs run at once.
        prefetch: jobs claimed beyond free handlers, so a handler never waits for a
            broker round trip (default: ``concurrency``).
        timeout: seconds a job may run unless the job says otherwise.
        max_attempts: default for jobs enqueued through the app to this queue.
        retry: the backoff schedule.
        lease: seconds a claim holds; the lease keeper renews every third of it,
            so a dead process's jobs come back within one lease.
        claim_wait: seconds one claim call waits for work before asking again.
        graceful_timeout: on drain, seconds running jobs get to finish.
        dependency_errors: exception types that mean a dependency, not the job,
            failed (``guild.DependencyFailure`` always counts).
        dependency_threshold: that many dependency failures in a row crash the
            worker so its supervisor takes over.
        stall_timeout: a claim call that has not returned after ``claim_wait``
            plus this long is a stalled claimer: the worker crashes.
        limit: how fast and how many jobs may run per key (:class:`guild.Limit`),
            waited for before the job's timeout starts; shared by every process
            on the same Redis when the broker is Redis.
    """

    # A worker only reads its queue: one named before the length limit of new
    # names (check_queue_name) must still be drained.
    queue: str = attrs.field(validator=lambda _, __, name: check_stored_queue_name(name))
    handler: Handler
    name: str = attrs.field(
        default=attrs.Factory(lambda self: self.queue, takes_self=True), validator=_worker_name
    )
    concurrency: int = attrs.field(default=16, validator=attrs.validators.ge(1))
    prefetch: int = attrs.field(
        default=attrs.Factory(lambda self: self.concurrency, takes_self=True),
        validator=attrs.validators.ge(0),
    )
    timeout: float | None = attrs.field(default=300.0, validator=_positive_or_none)
    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    lease: float = attrs.field(default=10.0, validator=_positive)
    claim_wait: float = attrs.field(default=1.0, validator=_positive)
    graceful_timeout: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))
    dependency_errors: tuple[type[BaseException], ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_exception_types
    )
    dependency_threshold: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    stall_timeout: float = attrs.field(default=60.0, validator=_positive)
    limit: Limit | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.instance_of(Limit))
    )


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
