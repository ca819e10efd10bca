"""Job inspection for the SQLite broker: ``job_info`` and ``set_progress``.

Columns ``started_at``, ``progress``, ``progress_message`` and ``progress_at``
come with schema version 6 (``_sqlite_schema``). Functions here run inside the
broker's thread, given its connection; the broker wraps them in its read or
write transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from typing import Any

from .._codec import lenient_seconds
from .._job import Delivery, JobStatus, Priority
from .._jobinfo import JobInfo, JobProgress, progress_from_fields

_SELECT = (
    "SELECT id, queue, status, attempt, max_attempts, enqueued_at, not_before,"
    " ready_at, started_at, finished_at, died_at, consumer, error, traceback, progress,"
    " progress_message, progress_at, result, trace_id, key, result_expires, priority"
    " FROM jobs WHERE id = ?"
)


# A row whose priority is no level (hand-edited) is dead-lettered, never claimed;
# shown, it reads as normal.
_LEVELS = {int(level): level for level in Priority}


def level_of(stored: object) -> Priority:
    """The :class:`Priority` a ``priority`` column holds (normal if it is no level)."""
    return _LEVELS.get(stored, Priority.NORMAL) if isinstance(stored, int) else Priority.NORMAL


def _text(value: Any) -> Any:
    # A corrupt row read as bytes (the broker's second try) is still shown.
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def select(db: sqlite3.Connection, job_id: str, now: float) -> JobInfo | None:
    """The job's :class:`JobInfo`, or ``None`` (no such job, or its record expired)."""
    row = db.execute(_SELECT, (job_id,)).fetchone()
    if row is None:
        return None
    (_, queue, status_text, attempt, max_attempts, enqueued_at, not_before) = row[:7]
    (ready_at, started_at, finished_at, died_at, consumer, error, trace) = row[7:14]
    (progress, message, progress_at, result, trace_id, key, expires, level) = row[14:22]
    status_text = _text(status_text)
    if status_text in ("done", "cancelled") and expires is not None and expires <= now:
        return None  # as get_result: past its retention, only the purge has yet to run
    status = JobStatus(status_text)
    if status is JobStatus.READY and ready_at > now:
        status = JobStatus.DELAYED
    attempts = int(attempt)
    value = None
    if status is JobStatus.DONE and result is not None:
        value = json.loads(_text(result))
    return JobInfo(
        id=job_id,
        queue=_text(queue),
        status=status,
        attempts=attempts,
        max_attempts=int(max_attempts) or None,
        priority=level_of(level),
        enqueued_at=float(enqueued_at),
        not_before=lenient_seconds(not_before),
        started_at=lenient_seconds(started_at),
        finished_at=lenient_seconds(finished_at if finished_at is not None else died_at)
        if status in (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED)
        else None,
        consumer=_text(consumer),
        error=_text(error) if error is not None else None,
        traceback=_text(trace) if trace is not None else None,
        progress=progress_from_fields(progress, message, progress_at),
        result=value,
        trace_id=_text(trace_id),
        key=_text(key),
    )


def set_progress(db: sqlite3.Connection, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
    """Store each held job's progress; a delivery no longer held changes nothing."""
    db.executemany(
        "UPDATE jobs SET progress = ?, progress_message = ?, progress_at = ?"
        " WHERE id = ? AND status = 'in_flight' AND receipt = ?",
        [
            (p.fraction, p.message, p.at, delivery.job.id, delivery.receipt)
            for delivery, p in updates
        ],
    )
