"""Deleting jobs from the SQLite broker in small batches: retention and ``purge``.

SQLite has one writer at a time: a ``DELETE`` of half a million rows in one
transaction holds the write lock for seconds, and every worker's claim waits
behind it. So every deletion here takes at most ``BATCH`` rows (by ``rowid``,
through an index on the status and time it selects by), one transaction each;
the broker commits between batches and goes back to the event loop, leaving the
lock free for as long as the batch held it (:func:`gap`), so claims and acks of
this and other processes interleave. ``BATCH`` rows cost a few milliseconds
(``benchmarks/bench_retention.py`` measures the longest hold on 500,000 rows),
well under the 50 ms a batch may hold the lock.

Retention (``guild.Retention``, in the broker's clock):

* ``done``/``cancelled`` rows go once ``result_expires`` (written at finish as
  ``finished_at + Retention.record``) has passed (index ``jobs_expiry``);
* ``dead`` rows go at ``died_at + Retention.dead`` (index ``jobs_dead``), never
  when ``dead`` is ``None``;
* idempotency keys go at ``expires``.

Each function runs inside the broker's write transaction and returns the number
of rows it deleted; fewer than ``limit`` means nothing more is due.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection

import trio

from .._job import JobStatus
from .._retention import Retention

BATCH = 250
"""Rows one transaction deletes at most."""


def gap(took: float) -> float:
    """Seconds to leave the write lock free after a batch that took ``took``.

    As long as the batch, and at least a millisecond: a writer of another
    process waiting for the lock retries on SQLite's busy-handler schedule
    (sleeps of 1, 2, 5 … 100 ms), so batches back to back could starve it for
    the whole purge; with the lock free half the time, its retries get in."""
    return max(0.001, took)


async def pause(took: float) -> None:
    """Go back to the event loop between batches, leaving the lock free :func:`gap`."""
    await trio.sleep(gap(took))


def expired(db: sqlite3.Connection, now: float, retention: Retention, limit: int = BATCH) -> int:
    """Delete up to ``limit`` rows whose retention ran out by ``now``."""
    deleted = db.execute(
        "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
        " WHERE status IN ('done', 'cancelled') AND result_expires <= ? LIMIT ?)",
        (now, limit),
    ).rowcount
    if retention.dead is not None and deleted < limit:
        deleted += db.execute(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
            " WHERE status = 'dead' AND died_at <= ? LIMIT ?)",
            (now - retention.dead, limit - deleted),
        ).rowcount
    if deleted < limit:
        deleted += db.execute(
            "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency"
            " WHERE expires <= ? LIMIT ?)",
            (now, limit - deleted),
        ).rowcount
    return int(deleted)


# status -> (the condition selecting it, the column its age runs from)
_SELECTS: dict[JobStatus, tuple[str, str]] = {
    JobStatus.READY: ("status = 'ready' AND ready_at <= :now", "enqueued_at"),
    JobStatus.DELAYED: ("status = 'ready' AND ready_at > :now", "enqueued_at"),
    JobStatus.DONE: ("status = 'done'", "finished_at"),
    JobStatus.CANCELLED: ("status = 'cancelled'", "finished_at"),
    JobStatus.DEAD: ("status = 'dead'", "died_at"),
}


def purge(
    db: sqlite3.Connection,
    queue: str,
    statuses: Collection[JobStatus],
    now: float,
    cutoff: float | None,
    limit: int = BATCH,
) -> int:
    """Delete up to ``limit`` rows of ``queue`` in ``statuses`` whose age runs from
    ``cutoff`` or earlier (any age when ``None``)."""
    deleted = 0
    for status in sorted(statuses, key=lambda s: s.value):
        condition, since = _SELECTS[status]
        if cutoff is not None:
            condition += f" AND {since} <= :cutoff"
        deleted += db.execute(
            "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
            f" WHERE queue = :queue AND {condition} LIMIT :limit)",
            {"queue": queue, "now": now, "cutoff": cutoff, "limit": limit - deleted},
        ).rowcount
        if deleted >= limit:
            break
    return deleted
