"""Job inspection for the Redis broker: ``job_info``'s reading of a job's hash.

The hash (``P:job:<id>``, see ``_redis_functions.lua``) holds the job's fields,
its status, ``consumer``, ``error``/``traceback``, ``started_at`` (set when a run
is counted) and ``progress``/``progress_message``/``progress_at`` (the
``set_progress`` script); a finished job's end time and value are in its result
(``P:result:<id>``).
"""

from __future__ import annotations

import json
from typing import Any

from .._codec import lenient_seconds
from .._job import JobStatus, Priority
from .._jobinfo import JobInfo, progress_from_fields
from . import _redis_keys as keys


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _optional(fields: dict[str, Any], name: str) -> str | None:
    value = fields.get(name)
    if value is None or value in (b"", ""):
        return None
    return _text(value)


# The hash holds ``priority`` only for a job that is not normal (see the enqueue script).
_LEVELS = {str(int(level)): level for level in Priority}


def _priority(fields: dict[str, Any]) -> Priority:
    return _LEVELS.get(_optional(fields, "priority") or "0", Priority.NORMAL)


async def job_info(client: Any, prefix: str, job_id: str, now: float) -> JobInfo | None:
    """The job's :class:`JobInfo`, or ``None`` when neither its hash nor its result is there."""
    raw = await client.hgetall(keys.job(prefix, job_id))
    fields = {_text(k): v for k, v in raw.items()}
    stored = await client.get(keys.result(prefix, job_id))
    result = json.loads(stored) if stored is not None else None
    if not fields.get("status"):
        if result is None:
            return None
        # The hash expired a moment before its result (whole seconds against ms);
        # the result does not keep the priority, so it reads as normal.
        return JobInfo(
            id=job_id,
            queue=result["queue"],
            status=JobStatus(result["status"]),
            attempts=int(result["attempts"]),
            finished_at=float(result["finished_at"]),
            error=result.get("error"),
            result=result.get("value"),
        )
    queue = _text(fields.get("queue", b""))
    status = JobStatus(_text(fields["status"]))
    if status is JobStatus.DELAYED:
        # Due delayed jobs move to the stream at the next claim; until then the
        # job is ready all the same.
        due = await client.zscore(keys.delayed(prefix, queue), job_id)
        if due is not None and float(due) <= now:
            status = JobStatus.READY
    finished_at = None
    if result is not None and status in (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED):
        finished_at = float(result["finished_at"])
    max_attempts = _optional(fields, "max_attempts")
    attempts = _optional(fields, "attempt")
    return JobInfo(
        id=job_id,
        queue=queue,
        status=status,
        attempts=int(attempts) if attempts is not None and attempts.isdigit() else 0,
        max_attempts=int(max_attempts) if max_attempts and max_attempts.isdigit() else None,
        priority=_priority(fields),
        enqueued_at=lenient_seconds(fields.get("enqueued_at")) or 0.0,
        not_before=lenient_seconds(fields.get("not_before")),
        started_at=lenient_seconds(fields.get("started_at")),
        finished_at=finished_at,
        consumer=_optional(fields, "consumer"),
        error=_optional(fields, "error"),
        traceback=_optional(fields, "traceback"),
        progress=progress_from_fields(
            fields.get("progress"), fields.get("progress_message"), fields.get("progress_at")
        ),
        result=result.get("value") if result is not None and status is JobStatus.DONE else None,
        trace_id=_optional(fields, "trace_id") or job_id,
        key=_optional(fields, "key"),
    )
