"""What a broker knows of one job: :class:`JobInfo` (``Broker.job_info``), and the
progress a handler reported (:class:`JobProgress`).

Times are in the broker's clock (``broker.now()``), as everywhere in guild.
"""

from __future__ import annotations

import math
from typing import Any

import attrs

from ._codec import storable
from ._errors import GuildError
from ._exports import publish
from ._job import JobStatus, JSONValue, Priority

MAX_PROGRESS_MESSAGE = 1000
"""Characters of a progress message kept; a longer one is cut, not refused."""


class InvalidProgress(GuildError, ValueError):
    """``guild.progress`` was given a fraction outside ``[0, 1]`` (or not a number),
    or a message that is not a string.

    Attributes:
        value: the value as given.
        reason: what is wrong with it.
    """

    def __init__(self, value: object, reason: str) -> None:
        super().__init__(f"progress {_shown(value)}: {reason}")
        self.value = value
        self.reason = reason


def _shown(value: object) -> str:
    # A value as given may be huge (a megabyte string, an int too long for repr).
    try:
        text = repr(value)
    except ValueError:
        return f"<int of {value.bit_length():,} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= 60 else text[:57] + "..."


def check_fraction(fraction: object) -> float:
    """``fraction`` as a float, if it is a number in ``[0, 1]``.

    Raises:
        InvalidProgress: not a real number (a bool counts as none), NaN, or out of range.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, int | float):
        raise InvalidProgress(fraction, f"must be a number, not {type(fraction).__name__}")
    if isinstance(fraction, int) and not -2 <= fraction <= 2:
        # float() of an int past the float range raises OverflowError: out of range.
        raise InvalidProgress(fraction, "must be a fraction from 0 to 1")
    value = float(fraction)
    if math.isnan(value) or not 0.0 <= value <= 1.0:
        raise InvalidProgress(fraction, "must be a fraction from 0 to 1")
    return value


def check_message(message: object) -> str | None:
    """``message`` (``None`` or a string, cut to :data:`MAX_PROGRESS_MESSAGE`).

    Raises:
        InvalidProgress: not a string.
    """
    if message is None:
        return None
    if not isinstance(message, str):
        raise InvalidProgress(message, f"a message must be a string, not {type(message).__name__}")
    return storable(message[:MAX_PROGRESS_MESSAGE])


def _fraction(_: object, __: attrs.Attribute[Any], value: float) -> None:
    check_fraction(value)


@attrs.frozen(kw_only=True, slots=True)
class JobProgress:
    """How far a running job said it got (``guild.progress``).

    Attributes:
        fraction: from 0 (nothing done) to 1 (all done).
        message: what it is doing, if it said.
        at: when it said so, in the broker's clock.
    """

    fraction: float = attrs.field(validator=_fraction)
    message: str | None = None
    at: float = 0.0


@attrs.frozen(kw_only=True, slots=True)
class JobInfo:
    """One job as its broker knows it now (``Broker.job_info``, ``guild job show``).

    Attributes:
        id: the job's id.
        queue: its queue.
        status: where it is (a ready job whose ``not_before`` or retry time is
            ahead is ``DELAYED``).
        attempts: runs started so far (a claimed but unstarted job's run is not
            counted).
        max_attempts: its own limit, or ``None`` for its worker's.
        priority: its level (:class:`Priority`), kept through retries, dead
            letters and requeues.
        enqueued_at: when it was enqueued.
        not_before: the earliest time it could first run, if it was delayed.
        started_at: when its last run started (``None``: never run).
        finished_at: when it ended (done, dead or cancelled; ``None`` before).
        consumer: the worker consumer (``host:pid:worker:…``) that last took it.
        error: its last error: the reason of its last failed run (kept across
            the retry), of its dead letter, or ``"cancelled"``.
        traceback: the traceback of that error, when a handler raised it.
        progress: the last progress its handler reported, if any.
        result: a done job's value (``None`` otherwise).
        trace_id: the pipeline it belongs to.
        key: its idempotency key, if any.
    """

    id: str
    queue: str
    status: JobStatus
    attempts: int = 0
    max_attempts: int | None = None
    priority: Priority = Priority.NORMAL
    enqueued_at: float = 0.0
    not_before: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    consumer: str | None = None
    error: str | None = None
    traceback: str | None = None
    progress: JobProgress | None = None
    result: JSONValue = None
    trace_id: str = ""
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A dict ready for ``json.dumps`` (the shape of ``guild job show --json``)."""
        progress = self.progress
        return {
            "id": self.id,
            "queue": self.queue,
            "status": self.status.value,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            # Spelled as `guild enqueue --priority` takes it.
            "priority": self.priority.name.lower(),
            "enqueued_at": self.enqueued_at,
            "not_before": self.not_before,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "consumer": self.consumer,
            "error": self.error,
            "traceback": self.traceback,
            "progress": None
            if progress is None
            else {"fraction": progress.fraction, "message": progress.message, "at": progress.at},
            "result": self.result,
            "trace_id": self.trace_id,
            "key": self.key,
        }


def progress_from_fields(fraction: object, message: object, at: object) -> JobProgress | None:
    """A stored progress (three nullable columns or hash fields), or ``None``."""
    if fraction is None or fraction == "" or fraction == b"":
        return None
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    try:
        return JobProgress(
            fraction=float(_str(fraction)),
            message=text if isinstance(text, str) and text != "" else None,
            at=float(_str(at)) if at not in (None, "", b"") else 0.0,
        )
    except (ValueError, InvalidProgress):
        return None  # hand-edited garbage: no progress rather than no answer


def _str(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
