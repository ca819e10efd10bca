"""The values that travel through guild: jobs, deliveries, results, dead letters.

All are frozen attrs classes, validated when built and changed with
``attrs.evolve``. Times are seconds in the *broker's* clock (``broker.now()``):
wall-clock seconds for the durable brokers, ``trio.current_time()`` for the
memory broker so that it is deterministic under ``trio.testing.MockClock``.
"""

from __future__ import annotations

import enum
import functools
import math
import unicodedata
from collections.abc import Iterable
from typing import Any, Final

import attrs

from ._errors import InvalidField, InvalidQueueName
from ._exports import publish
from ._ids import new_id, new_ids

JSONValue = Any
"""A value that ``json.dumps`` accepts: dict, list, str, int, float, bool or None."""


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    READY = "ready"
    DELAYED = "delayed"
    IN_FLIGHT = "in_flight"
    DONE = "done"
    DEAD = "dead"
    CANCELLED = "cancelled"
    """Stopped on request (``broker.cancel``): never run, or its run cut short."""


class Priority(enum.IntEnum):
    """How soon a job is claimed among the ready jobs of its queue: higher first.

    Within a level jobs keep their order (the time they became ready, then id).
    ``Job.priority`` takes a member or its int; the default is ``NORMAL``.
    """

    LOW = -1
    NORMAL = 0
    HIGH = 1


PRIORITIES: Final = tuple(sorted(Priority, reverse=True))
"""Every priority level, highest (claimed first) to lowest."""


def check_priority(value: Priority | int | str) -> Priority:
    """``value`` as a :class:`Priority`: a member, its int, or its name (any case).

    Raises:
        ValueError: anything else, naming the levels there are.
    """
    if isinstance(value, Priority):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return Priority(value)
        except ValueError:
            pass
    elif isinstance(value, str):
        member = Priority.__members__.get(value.strip().upper())
        if member is not None:
            return member
    levels = ", ".join(f"{p.name.lower()} ({p.value})" for p in PRIORITIES)
    raise ValueError(f"priority must be one of {levels}; got {value!r}")


TERMINAL: Final = frozenset({JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED})
"""Statuses a job never leaves on its own."""
ACTIVE: Final = frozenset({JobStatus.READY, JobStatus.DELAYED, JobStatus.IN_FLIGHT})
"""Statuses of a job that still has work ahead of it."""


def _positive_or_none(_: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{attribute.name} must be a positive number of seconds, got {value!r}")


MAX_QUEUE_NAME: Final = 200
"""The most characters a new queue name may have: a name is a column of every
table and a part of every log line and key; a longer one is a paste gone wrong.
(A canary lane, ``q@canary``, is made by the broker and may pass it by its suffix.)"""
MAX_ID: Final = 200
"""The most characters a job id or trace id may have (guild's own ids have 26)."""
MAX_KEY: Final = 1024
"""The most characters an idempotency key may have: room for a URL or a few
joined ids; a hash of anything bigger is the key to use instead."""

_UNPRINTABLE: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})
"""Unicode categories that forge log lines or garble a terminal (control,
format, line and paragraph separators)."""


def _unprintable(text: str) -> bool:
    return not text.isprintable() and any(unicodedata.category(c) in _UNPRINTABLE for c in text)


def check_queue_name(name: object) -> str:
    """The name, if a new queue may have it; the one rule for jobs, the CLI and
    guild.toml (:func:`check_stored_queue_name` for a queue that may already exist).

    Raises:
        InvalidQueueName: not a string, empty, longer than :data:`MAX_QUEUE_NAME`,
            padded with whitespace, or holding a control character (a newline
            would forge log lines and break tables).
    """
    name = check_stored_queue_name(name)
    if len(name) > MAX_QUEUE_NAME:
        raise InvalidQueueName(
            name, f"must be at most {MAX_QUEUE_NAME:,} characters, got {len(name):,}"
        )
    return name


def check_stored_queue_name(name: object) -> str:
    """The name, if a stored queue may have it: the rule of :func:`check_queue_name`
    without its length limit, which came later. For what reads or drains a queue
    (a worker, ``guild purge``, a stored row), so that a queue named before the
    limit stays reachable.

    Raises:
        InvalidQueueName: not a string, empty, padded, or holding a control character.
    """
    if not isinstance(name, str):
        raise InvalidQueueName(name, f"must be a string, not {type(name).__name__}")
    problem = _queue_name_problem(name)
    if problem is not None:
        raise InvalidQueueName(name, problem)
    return name


@functools.lru_cache(maxsize=4096)
def _queue_name_problem(name: str) -> str | None:
    # Cached: every Job built checks its queue, and an app has few queue names.
    # No length limit here: stored rows are read with this rule too.
    if not name.strip():
        return "must not be empty or only whitespace"
    if name != name.strip():
        return "must not start or end with whitespace"
    if _unprintable(name):
        return "must not hold control or line-breaking characters"
    return None


def check_field(field: str, value: object, limit: int, *, label: bool = True) -> str:
    """``value``, if it is a string a job field (or a name) may hold: not empty,
    at most ``limit`` characters; a ``label`` (an id, a name: shown in tables and
    log lines) also not only whitespace and without control or line-breaking
    characters.

    Raises:
        InvalidField: it is not, naming ``field`` and the limit.
    """
    if not isinstance(value, str):
        raise InvalidField(field, value, f"must be a string, not {type(value).__name__}")
    if not value or (label and not value.strip()):
        raise InvalidField(field, value, "must not be empty or only whitespace")
    if len(value) > limit:
        raise InvalidField(
            field, value, f"must be at most {limit:,} characters, got {len(value):,}"
        )
    if label and _unprintable(value):
        raise InvalidField(field, value, "must not hold control or line-breaking characters")
    return value


def _queue_name(_: object, __: attrs.Attribute[Any], value: str) -> None:
    check_queue_name(value)


def _job_id(_: object, attribute: attrs.Attribute[Any], value: str) -> None:
    check_field(attribute.name, value, MAX_ID)


def _key(_: object, __: attrs.Attribute[Any], value: str | None) -> None:
    # Any text: a key is compared, never parsed, and is often made of the input
    # itself. Not empty: a stored '' reads back as no key.
    if value is not None:
        check_field("key", value, MAX_KEY, label=False)


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
        attempt: how many times a handler has started it (0 until first
            started). In a :class:`Delivery` it is the number of that delivery's
            run: counted by the broker when the run starts, not when it is claimed.
        max_attempts: runs allowed before it goes to the dead letters (``None``:
            the worker's ``max_attempts``, resolved when it runs).
        enqueued_at: when it was enqueued, in the broker's clock.
        not_before: the earliest time it may be claimed (``None``: at once).
        timeout: seconds its handler may run (``None``: the worker's default).
        key: idempotency key; a second enqueue with the same key on the same
            queue within the broker's key window is a no-op.
        trace_id: links the jobs of one pipeline; defaults to ``id``.
        priority: claimed before the ready jobs of lower priority on its queue
            (see :class:`Priority`); kept through delays, retries and requeues.

    ``queue`` follows :func:`check_queue_name` (at most :data:`MAX_QUEUE_NAME`
    characters); ``id`` and ``trace_id`` hold at most :data:`MAX_ID` characters,
    not blank, without control characters; ``key`` at most :data:`MAX_KEY`
    characters of any kind, not empty (else :class:`guild.InvalidField`).
    """

    queue: str = attrs.field(validator=_queue_name)
    payload: JSONValue = None
    id: str = attrs.field(factory=new_id, validator=_job_id)
    attempt: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    max_attempts: int | None = attrs.field(
        default=None, validator=attrs.validators.optional(attrs.validators.ge(1))
    )
    enqueued_at: float = 0.0
    not_before: float | None = None
    timeout: float | None = attrs.field(default=None, validator=_positive_or_none)
    key: str | None = attrs.field(default=None, validator=_key)
    trace_id: str = attrs.field(
        default=attrs.Factory(lambda self: self.id, takes_self=True), validator=_job_id
    )
    priority: Priority = attrs.field(default=Priority.NORMAL, converter=check_priority)


@attrs.frozen(kw_only=True, slots=True)
class Delivery:
    """One claim of a job by one consumer, valid until its lease expires.

    Only brokers create deliveries. ``receipt`` identifies this claim: after the
    lease has expired and another consumer claimed the job, the old receipt no
    longer renews, retries or dead-letters it.

    ``started`` says whether the broker has counted this run as an attempt. A
    prefetched delivery is not started until a handler takes it
    (``Broker.start``); if its lease expires first, the job is claimable again
    with its attempts unchanged.

    ``interrupted`` says that the job's last run started and never finished: its
    lease expired (its process died, perhaps because of it). A broker never
    starts such a job at claim, and a worker runs it alone, so that a job that
    kills its process is charged for it and the jobs beside it are not.
    """

    job: Job
    receipt: str
    consumer: str
    lease_expires: float
    started: bool = True
    interrupted: bool = False


def attempts_allowed(job: Job, default: int) -> int:
    """``job.max_attempts``, or ``default`` (its worker's) when the job sets none."""
    return job.max_attempts if job.max_attempts is not None else default


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
    """Counts of one queue's jobs by status.

    ``done`` and ``cancelled`` count every job that ended so since the broker's
    records began; the others count the jobs in that state now.

    ``broken`` says why a queue's counts could not be read, which are then all
    0: on Redis, one of its keys holds another type than guild keeps there
    (``"the key guild:q:emails:ready holds a string, not a stream"``: another
    program wrote it). ``None`` for a queue read as usual; the other queues are
    counted either way.
    """

    queue: str
    ready: int = 0
    delayed: int = 0
    in_flight: int = 0
    done: int = 0
    dead: int = 0
    cancelled: int = 0
    broken: str | None = None


_JOB_FIELDS = tuple(field.name for field in attrs.fields(Job))
# Straight-line copies, generated once from the field list: a loop of getattr /
# setattr costs twice as much, and these run for every job a broker moves. Each
# field is set through its slot's own descriptor (bound once, as a default), a
# C call that skips the attribute lookup of ``object.__setattr__``.
_SETTERS = "".join(f", set_{name}=Job.__dict__[{name!r}].__set__" for name in _JOB_FIELDS)
_COPY_SOURCE = f"def _copy(job, changes, new=object.__new__{_SETTERS}):\n    job2 = new(Job)\n" + (
    "".join(
        f"    set_{name}(job2, changes[{name!r}] if {name!r} in changes else job.{name})\n"
        for name in _JOB_FIELDS
    )
    + "    return job2\n"
)
# A job like ``job`` with another id, payload and trace id (``make_jobs``).
_LIKE_SOURCE = f"def _like(job, id, payload, trace_id, new=object.__new__{_SETTERS}):\n" + (
    "    job2 = new(Job)\n"
    + "".join(
        f"    set_{name}(job2, {name if name in ('id', 'payload', 'trace_id') else 'job.' + name})\n"
        for name in _JOB_FIELDS
    )
    + "    return job2\n"
)
# A job like ``job`` with another attempt: what a claim makes of every job it takes.
_ATTEMPT_SOURCE = f"def _next(job, attempt, new=object.__new__{_SETTERS}):\n" + (
    "    job2 = new(Job)\n"
    + "".join(
        f"    set_{name}(job2, {'attempt' if name == 'attempt' else 'job.' + name})\n"
        for name in _JOB_FIELDS
    )
    + "    return job2\n"
)
# A Delivery, built as _copy builds a job: without the frozen class's __init__.
_DELIVERY_FIELDS = tuple(field.name for field in attrs.fields(Delivery))
_DELIVERY_SOURCE = (
    f"def _delivery({', '.join(_DELIVERY_FIELDS)}, new=object.__new__"
    + "".join(f", set_{name}=Delivery.__dict__[{name!r}].__set__" for name in _DELIVERY_FIELDS)
    + "):\n    made = new(Delivery)\n"
    + "".join(f"    set_{name}(made, {name})\n" for name in _DELIVERY_FIELDS)
    + "    return made\n"
)


_SOURCES: Final = {
    "_copy": _COPY_SOURCE,
    "_like": _LIKE_SOURCE,
    "_next": _ATTEMPT_SOURCE,
    "_delivery": _DELIVERY_SOURCE,
}


def _compile(name: str) -> Any:
    """Compile the generated function ``name`` and put it in this module in place
    of its stub below, so that every later call reaches it directly.

    Compiling all four at import would cost about as much as building two attrs
    classes in every process; each uses only some (a worker on SQLite none before
    its first job, a producer only ``_like``).
    """
    namespace: dict[str, Any] = {"Job": Job, "Delivery": Delivery}
    exec(_SOURCES[name], namespace)
    made = namespace[name]
    globals()[name] = made
    return made


# The stubs each generated function replaces on its first call (see _compile).
def _copy(job: Job, changes: dict[str, Any]) -> Job:
    new: Job = _compile("_copy")(job, changes)
    return new


def _like(job: Job, id: str, payload: JSONValue, trace_id: str) -> Job:
    new: Job = _compile("_like")(job, id, payload, trace_id)
    return new


def _next(job: Job, attempt: int) -> Job:
    new: Job = _compile("_next")(job, attempt)
    return new


def _delivery(
    job: Job, receipt: str, consumer: str, lease_expires: float, started: bool, interrupted: bool
) -> Delivery:
    made: Delivery = _compile("_delivery")(
        job, receipt, consumer, lease_expires, started, interrupted
    )
    return made


def replace_fields(job: Job, **changes: Any) -> Job:
    """``attrs.evolve`` without re-validation, for brokers.

    A broker changes only fields it owns (``attempt``, ``enqueued_at``,
    ``not_before``) to values it computed, on a job that was validated when it
    was built; skipping ``__init__`` saves most of a claim's cost at tens of
    thousands of jobs a second.
    """
    new: Job = _copy(job, changes)
    return new


def with_attempt(job: Job, attempt: int) -> Job:
    """``replace_fields(job, attempt=attempt)``, for a broker's claim: half the cost."""
    new: Job = _next(job, attempt)
    return new


def make_delivery(
    job: Job, receipt: str, consumer: str, lease_expires: float, started: bool, interrupted: bool
) -> Delivery:
    """``Delivery(...)`` without re-validation (it has none) or the frozen class's
    ``__init__``, for a broker's claim: every argument is given, none defaulted."""
    made: Delivery = _delivery(job, receipt, consumer, lease_expires, started, interrupted)
    return made


def jobs_like(template: Job, payloads: Iterable[JSONValue], trace_id: str | None) -> list[Job]:
    """Jobs that share every field of ``template`` (a validated job) but their
    payload and a new id each; ``trace_id`` (``None``: each job's own id).

    The checks ``Job`` makes are on the shared fields, so they are made once, on
    the template: building a batch this way costs a third of calling ``Job`` for
    each, and the ids come from one clock read (``new_ids``).
    """
    payloads = list(payloads)
    if trace_id is not None:
        check_field("trace_id", trace_id, MAX_ID)
    return [
        _like(template, job_id, payload, job_id if trace_id is None else trace_id)
        for job_id, payload in zip(new_ids(len(payloads)), payloads, strict=True)
    ]


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
