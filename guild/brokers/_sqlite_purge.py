"""Deleting jobs from the SQLite broker in small batches: retention and ``purge``.

SQLite has one writer at a time: a ``DELETE`` of half a million rows in one
transaction holds the write lock for seconds, and every worker's claim waits
behind it. So a batch (one transaction) deletes at most ``BATCH`` rows, ``STEP``
at a time (by ``rowid``, through the partial index over the status it selects
by), and takes no further step once it has been deleting for ``HOLD`` seconds:
on a slow disk, where ``BATCH`` rows can take longer than the 50 ms a batch may
hold the lock, the batch is cut short by time, not by rows. The broker commits
between batches and goes back to the event loop, leaving the lock free for as
long as the batch held it (:func:`gap`), so claims and acks of this and other
processes interleave (``benchmarks/bench_retention.py`` measures the longest
hold on 500,000 rows).

Retention (``guild.Retention``, in the broker's clock):

* ``done``/``cancelled`` rows go once ``result_expires`` (written at finish as
  ``finished_at + Retention.record``) has passed (index ``jobs_expires``);
* ``dead`` rows go at ``died_at + Retention.dead`` (index ``jobs_died``), never
  when ``dead`` is ``None``;
* idempotency keys go at ``expires``.

Each function runs inside the broker's write transaction and returns a
:class:`Swept`: the rows it deleted, and whether it stopped at its row or time
limit (more may be due) rather than because nothing more was.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Collection, Sequence

import attrs
import trio

from .._job import JobStatus
from .._retention import Retention

BATCH = 250
"""Rows one transaction deletes at most."""

STEP = 50
"""Rows one statement deletes at most: how often a batch looks at its clock."""

HOLD = 0.02
"""Seconds of deleting after which a batch takes no further step. A step of
``STEP`` rows takes well under a millisecond on a warm cache, so with the last
step and the commit a batch stays far below 50 ms of holding the lock."""

Clock = Callable[[], float]


@attrs.frozen
class Swept:
    """What one batch deleted: ``rows``, and ``more`` when it stopped at its row
    or time limit (so more may be due) rather than for lack of rows."""

    rows: int
    more: bool


def _steps(
    deletes: Sequence[Callable[[int], int]], limit: int, step: int, hold: float, clock: Clock
) -> Swept:
    """Run each of ``deletes`` (given how many rows to delete at most, returning how
    many it did) until it runs dry, ``step`` rows at a time, stopping at ``limit``
    rows or once ``hold`` seconds have passed since the first step."""
    began = clock()
    deleted = 0
    for delete in deletes:
        while deleted < limit:
            if deleted and clock() - began >= hold:
                return Swept(deleted, more=True)
            asked = min(step, limit - deleted)
            got = delete(asked)
            deleted += got
            if got < asked:
                break
    return Swept(deleted, more=deleted >= limit)


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


def expired(
    db: sqlite3.Connection,
    now: float,
    retention: Retention,
    limit: int = BATCH,
    *,
    step: int = STEP,
    hold: float = HOLD,
    clock: Clock = time.perf_counter,
) -> Swept:
    """Delete up to ``limit`` rows whose retention ran out by ``now``."""

    def finished(n: int) -> int:
        return int(
            db.execute(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
                " WHERE status IN ('done', 'cancelled') AND result_expires <= ? LIMIT ?)",
                (now, n),
            ).rowcount
        )

    def dead(n: int) -> int:
        return int(
            db.execute(
                "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
                " WHERE status = 'dead' AND died_at <= ? LIMIT ?)",
                (died_before, n),
            ).rowcount
        )

    def keys(n: int) -> int:
        return int(
            db.execute(
                "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency"
                " WHERE expires <= ? LIMIT ?)",
                (now, n),
            ).rowcount
        )

    # Dead letters stay for ever when Retention.dead is None.
    died_before = None if retention.dead is None else now - retention.dead
    deletes = [finished, keys] if died_before is None else [finished, dead, keys]
    return _steps(deletes, limit, step, hold, clock)


# status -> (the condition selecting it, the column its age runs from)
_SELECTS: dict[JobStatus, tuple[str, str]] = {
    JobStatus.READY: ("status = 'ready' AND ready_at <= :now", "enqueued_at"),
    JobStatus.DELAYED: ("status = 'ready' AND ready_at > :now", "enqueued_at"),
    # The IN term is the partial index's own (jobs_expires): without it, a table scan.
    JobStatus.DONE: ("status IN ('done', 'cancelled') AND status = 'done'", "finished_at"),
    JobStatus.CANCELLED: (
        "status IN ('done', 'cancelled') AND status = 'cancelled'",
        "finished_at",
    ),
    JobStatus.DEAD: ("status = 'dead'", "died_at"),
}


def purge(
    db: sqlite3.Connection,
    queue: str,
    statuses: Collection[JobStatus],
    now: float,
    cutoff: float | None,
    limit: int = BATCH,
    *,
    step: int = STEP,
    hold: float = HOLD,
    clock: Clock = time.perf_counter,
) -> Swept:
    """Delete up to ``limit`` rows of ``queue`` in ``statuses`` whose age runs from
    ``cutoff`` or earlier (any age when ``None``)."""

    def deleter(status: JobStatus) -> Callable[[int], int]:
        condition, since = _SELECTS[status]
        if cutoff is not None:
            condition += f" AND {since} <= :cutoff"

        def delete(n: int) -> int:
            return int(
                db.execute(
                    "DELETE FROM jobs WHERE rowid IN (SELECT rowid FROM jobs"
                    f" WHERE queue = :queue AND {condition} LIMIT :limit)",
                    {"queue": queue, "now": now, "cutoff": cutoff, "limit": n},
                ).rowcount
            )

        return delete

    ordered = sorted(statuses, key=lambda s: s.value)
    return _steps([deleter(status) for status in ordered], limit, step, hold, clock)
