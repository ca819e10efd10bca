"""The values that travel through guild: jobs, deliveries, results, dead letters.

All are frozen attrs classes, validated when built and changed with
``attrs.evolve``. Times are seconds in the *broker's* clock (``broker.now()``):
wall-clock seconds for the durable brokers, ``trio.current_time()`` for the
memory broker so that it is deterministic under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any, Final

import attrs

from ._errors import PayloadDecodeError
from ._ids import new_id

JSONValue = Any
"""A value that ``json.dumps`` accepts: dict, list, str, int, float, bool or None."""


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    READY = "ready"
    DELAYED = "delayed"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    DEAD = "dead"


TERMINAL: Final = frozenset({JobStatus.DONE, JobStatus.DEAD})
"""Statuses a job never leaves on its own."""
ACTIVE: Final = frozenset({JobStatus.READY, JobStatus.DELAYED, JobStatus.IN_FLIGHT})
"""Statuses of a job that still has work ahead of it."""


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


def _non_empty(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen(kw_only=True, slots=True)
class UndecodablePayload:
    """Stands in for a payload that a broker could not decode.

    Brokers put this in ``Job.payload`` instead of raising, so the worker can move
    the job to the dead letters with the reason rather than lose it.
    """

    raw: bytes
    reason: str


@attrs.frozen(kw_only=True, slots=True)
class Job:
    """A unit of work.

    Attributes:
        queue: the queue (and so the worker) it is for.
        payload: JSON-serialisable arguments for the handler.
        id: unique, sortable by creation time.
        attempt: how many times it has been claimed, the current claim included
            (0 until first claimed).
        max_attempts: claims allowed before it goes to the dead letters.
        enqueued_at: when it was enqueued, in the broker's clock.
        not_before: the earliest time it may be claimed (``None``: at once).
        timeout: seconds its handler may run (``None``: the worker's default).
        key: idempotency key; a second enqueue with the same key on the same
            queue within the broker's key window is a no-op.
        trace_id: links the jobs of one pipeline; defaults to ``id``.
    """

    queue: str = attrs.field(validator=_non_empty)
    payload: JSONValue = None
    id: str = attrs.field(factory=new_id, validator=_non_empty)
    attempt: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    max_attempts: int = attrs.field(default=5, validator=attrs.validators.ge(1))
    enqueued_at: float = 0.0
    not_before: float | None = None
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    key: str | None = None
    trace_id: str = attrs.field(default=attrs.Factory(lambda self: self.id, takes_self=True))


@attrs.frozen(kw_only=True, slots=True)
class Delivery:
    """One claim of a job by one consumer, valid until its lease expires.

    Only brokers create deliveries. ``receipt`` identifies this claim: after the
    lease has expired and another consumer claimed the job, the old receipt no
    longer renews, retries or dead-letters it.
    """

    job: Job
    receipt: str
    consumer: str
    lease_expires: float


@attrs.frozen(kw_only=True, slots=True)
class Result:
    """What became of a finished job."""

    job_id: str
    queue: str
    status: JobStatus
    value: JSONValue = None
    error: str | None = None
    attempts: int = 0
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status is JobStatus.DONE


@attrs.frozen(kw_only=True, slots=True)
class DeadLetter:
    """A job that will not be run again unless requeued, and why."""

    job: Job
    error: str
    traceback: str | None = None
    died_at: float = 0.0


@attrs.frozen(kw_only=True, slots=True)
class QueueStats:
    """Counts of one queue's jobs by status."""

    queue: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    done: int = 0
    dead: int = 0


def encode_payload(payload: JSONValue) -> str:
    """Encode a payload as compact JSON.

    Raises:
        TypeError: the payload is not JSON-serialisable (named in the message).
    """
    try:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"job payload is not JSON-serialisable: {exc}") from exc


def decode_payload(job_id: str, raw: bytes | str) -> JSONValue:
    """Decode a stored payload; an undecodable one becomes :class:`UndecodablePayload`."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
        return UndecodablePayload(
            raw=data[:200], reason=str(PayloadDecodeError(job_id, raw, str(exc)))
        )


_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))
# A straight-line copy, generated once from the field list: a loop of getattr /
# setattr costs twice as much, and this runs twice for every job.
_COPY_SOURCE = "def _copy(job, new, changes, set=object.__setattr__):\n" + "".join(
    f"    set(new, {name!r}, changes[{name!r}] if {name!r} in changes else job.{name})\n"
    for name in _JOB_FIELDS
)
_namespace: dict[str, Any] = {}
exec(_COPY_SOURCE, _namespace)
_copy_job = _namespace["_copy"]


def replace_fields(job: Job, **changes: Any) -> Job:
    """``attrs.evolve`` without re-validation, for brokers.

    A broker changes only fields it owns (``attempt``, ``enqueued_at``,
    ``not_before``) to values it computed, on a job that was validated when it
    was built; skipping ``__init__`` saves most of a claim's cost at tens of
    thousands of jobs a second.
    """
    new = object.__new__(Job)
    _copy_job(job, new, changes)
    return new
