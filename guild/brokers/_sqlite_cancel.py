"""Job cancellation for the SQLite broker (see "Cancellation" in ``_protocol``).

Each function runs inside the broker's write transaction (or a read, for
:func:`requested`). A waiting job, an unstarted one and one whose lease ran out
end at once; a running one gets ``cancel_requested = 1``, which its worker polls
for through the partial index ``jobs_cancel`` (schema version 4). Settling calls
that would run a requested job again (retry, release, lease expiry) end it
instead, through :func:`end_requested`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

from .._job import Delivery

# What ending a row as cancelled writes; the parameters are finished_at, result_expires.
_END = (
    "status = 'cancelled', receipt = NULL, error = 'cancelled', traceback = NULL,"
    " finished_at = ?, result_expires = ?"
)


def count(db: sqlite3.Connection, queues: Iterable[str]) -> None:
    """Add one to each queue's cancelled count per appearance in ``queues``."""
    counts: dict[str, int] = {}
    for queue in queues:
        counts[queue] = counts.get(queue, 0) + 1
    if counts:
        db.executemany(
            "INSERT INTO queue_counts (queue, cancelled) VALUES (?, ?) ON CONFLICT (queue)"
            " DO UPDATE SET cancelled = cancelled + excluded.cancelled",
            list(counts.items()),
        )


def cancel(
    db: sqlite3.Connection, job_ids: Sequence[str], now: float, result_ttl: float
) -> list[str]:
    """``Broker.cancel`` in one transaction."""
    answered: list[str] = []
    ended: list[str] = []
    for job_id in job_ids:
        row = db.execute(
            "SELECT queue, status, started, lease_expires FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None or row[1] not in ("ready", "in_flight"):
            continue
        queue, status, started, lease_expires = row
        if status == "in_flight" and started and lease_expires is not None and lease_expires > now:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
        else:
            db.execute(f"UPDATE jobs SET {_END} WHERE id = ?", (now, now + result_ttl, job_id))
            ended.append(queue)
        answered.append(job_id)
    count(db, ended)
    return answered


def end_requested(
    db: sqlite3.Connection, where: str, params: Sequence[object], now: float, result_ttl: float
) -> int:
    """End as cancelled the in-flight rows matching ``where`` that have a request.

    Run before a statement that would make such rows claimable again, which then
    finds them gone. Returns how many ended.
    """
    rows = db.execute(
        f"UPDATE jobs SET {_END} WHERE cancel_requested = 1 AND status = 'in_flight'"
        f" AND {where} RETURNING queue",
        (now, now + result_ttl, *params),
    ).fetchall()
    count(db, (row[0] for row in rows))
    return len(rows)


def finish(
    db: sqlite3.Connection, deliveries: Sequence[Delivery], now: float, result_ttl: float
) -> None:
    """``Broker.finish_cancelled``: the held ones end cancelled."""
    ended: list[str] = []
    for delivery in deliveries:
        row = db.execute(
            f"UPDATE jobs SET {_END} WHERE id = ? AND status = 'in_flight' AND receipt = ?"
            " RETURNING queue",
            (now, now + result_ttl, delivery.job.id, delivery.receipt),
        ).fetchone()
        if row is not None:
            ended.append(row[0])
    count(db, ended)


def requested(db: sqlite3.Connection, job_ids: Sequence[str]) -> set[str]:
    """``Broker.cancel_requested``: read through the partial index, which holds
    only requested rows, then narrowed to ``job_ids``."""
    rows = db.execute(
        "SELECT id FROM jobs WHERE cancel_requested = 1 AND status = 'in_flight'"
    ).fetchall()
    if not rows:
        return set()
    return {row[0] for row in rows}.intersection(job_ids)
