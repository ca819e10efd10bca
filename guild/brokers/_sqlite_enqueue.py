"""The SQLite enqueue, once: the rows of a call and the transaction that stores them.

Two ways in share it. ``SqliteBroker.enqueue`` runs :func:`store` on the
broker's connection (in its database thread, batched with other writes: see
``_sqlite_batch``). :class:`Producers` runs the same :func:`store` in the
caller's own thread, on a connection of its own taken from a small pool: the
way :class:`guild.Client` enqueues on SQLite, as Huey does, with no hop to the
client's Trio thread and back. Both validate the same way (the jobs are made by
``make_jobs`` before either), route to canary lanes, honour idempotency keys
and priorities, and commit at the same durability.

Workers in other processes learn of a new job by polling (``SqliteBroker.claim``
reads again after 5 ms, doubling to 50 ms), whichever way it was stored; a
:class:`Producers` enqueue wakes no worker of its own process either, as none
waits on a client's broker.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any

from .._codec import BadRow, encode_payloads, job_from_row
from .._errors import BrokerClosed
from .._job import Job, replace_fields
from ._canary import sqlite_route
from ._sqlite_batch import transaction
from ._sqlite_errors import map_sqlite_exceptions


def decode(row: Sequence[Any], queue: str) -> Job | BadRow:
    """The job of a row's first ten columns (``sqlite._JOB_COLUMNS``), or why not."""
    # max_attempts 0 stands for None: the worker's (see the schema).
    fields = row[:10] if row[4] != 0 else (*row[:4], None, *row[5:10])
    return job_from_row(fields, queue=queue)


def job_of(row: Sequence[Any]) -> Job:
    """The job a row holds, or what can be read of it (for a dead letter)."""
    found = decode(row, row[1] if isinstance(row[1], str) and row[1] else "?")
    return found.job if isinstance(found, BadRow) else found


def rows_of(jobs: Sequence[Job], now: float) -> list[tuple[Any, ...]]:
    """The ``jobs`` rows of ``jobs`` enqueued at ``now`` (payloads encoded here, before
    any transaction: a payload that cannot be stored fails the call, storing nothing).

    Raises:
        PayloadEncodeError: a payload is not JSON.
    """
    return [
        (
            job.id,
            job.queue,
            payload,
            job.max_attempts or 0,
            now,
            job.not_before,
            job.timeout,
            job.key,
            job.trace_id,
            max(now, job.not_before) if job.not_before is not None else now,
            int(job.priority),
        )
        for job, payload in zip(jobs, encode_payloads(jobs), strict=True)
    ]


def store(
    db: sqlite3.Connection,
    jobs: Sequence[Job],
    rows: Sequence[tuple[Any, ...]],
    now: float,
    key_ttl: float,
) -> list[Job]:
    """Store ``jobs`` (their ``rows``, from :func:`rows_of`) inside the caller's write
    transaction; returns each job as stored, or for a key already held, its holder."""
    stored: list[Job] = []
    plain: list[tuple[Any, ...]] = []
    routed = sqlite_route(db, jobs)
    for job, row in zip(routed, rows, strict=True):
        if job.queue != row[1]:  # sent to its queue's canary lane
            row = (row[0], job.queue, *row[2:])
        holder = _hold_key(db, job, now, key_ttl) if job.key is not None else None
        if holder is not None:
            stored.append(holder)
            continue
        plain.append(row)
        stored.append(replace_fields(job, enqueued_at=now, attempt=0))
    db.executemany(
        "INSERT INTO jobs (id, queue, payload, max_attempts, enqueued_at, not_before,"
        " timeout, key, trace_id, ready_at, priority, status)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,'ready')",
        plain,
    )
    return stored


def _hold_key(db: sqlite3.Connection, job: Job, now: float, key_ttl: float) -> Job | None:
    """The job holding ``job.key`` on its queue, or None after taking the key for ``job``."""
    found = db.execute(
        "SELECT j.id, j.queue, j.payload, j.attempt, j.max_attempts, j.enqueued_at,"
        " j.not_before, j.timeout, j.key, j.trace_id FROM idempotency i JOIN jobs j"
        " ON j.id = i.job_id WHERE i.queue = ? AND i.key = ? AND i.expires > ?",
        (job.queue, job.key, now),
    ).fetchone()
    if found is not None:
        return job_of(found)
    db.execute(
        "INSERT INTO idempotency (queue, key, job_id, expires) VALUES (?,?,?,?)"
        " ON CONFLICT (queue, key) DO UPDATE SET job_id = excluded.job_id,"
        " expires = excluded.expires",
        (job.queue, job.key, job.id, now + key_ttl),
    )
    return None


class Producers:
    """Connections for enqueueing from any thread, each used by one thread at a time.

    A call takes an idle connection (or opens one), stores its jobs in one
    ``BEGIN IMMEDIATE`` transaction in the calling thread, and gives it back: as
    many connections as threads enqueue at once, not one per thread that ever
    did (a web server's thread per request would leave one open per request).
    The threads of one process write one at a time, queued on a mutex: SQLite
    has one write lock per file, and threads that each tried it napped and tried
    again (16 threads at ``FULL``: 465 µs of CPU a job, less than half of Huey's rate, whose
    threads queue on its one connection's lock).

    Durability is the broker's: at ``ENQUEUE`` and ``FULL`` these connections run
    ``synchronous=FULL`` (they only enqueue, and every enqueue commit is fsynced),
    at ``NORMAL`` they run ``NORMAL``. A write lock held by another connection is
    waited for as the broker's own writes wait (``_sqlite_batch.begin``).

    Args:
        path: the database file, opened (and its schema checked) by the broker.
        synchronous: the broker's setting, ``ENQUEUE``, ``FULL`` or ``NORMAL``.
    """

    def __init__(self, path: str, synchronous: str) -> None:
        self._path = path
        self._pragma = "NORMAL" if synchronous == "NORMAL" else "FULL"
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # one writer of this process at a time
        self._idle: list[sqlite3.Connection] = []
        self._closed = False

    def enqueue(self, jobs: Sequence[Job], now: float, key_ttl: float) -> list[Job]:
        """Store ``jobs`` in the calling thread (see :func:`store`); blocks until committed.

        Raises:
            BrokerClosed: closed before the call.
            BrokerUnavailable: the database could not be written (locked past
                the broker's patience, disk full …).
            PayloadEncodeError: a payload is not JSON; nothing stored.
        """
        rows = rows_of(jobs, now)
        db = self._take()
        try:
            with self._writing:
                return transaction(
                    db,
                    lambda db: store(db, jobs, rows, now, key_ttl),
                    self._path,
                    busy_handler=False,
                )
        finally:
            self._give_back(db)

    def close(self) -> None:
        """Close the idle connections; those in use close when given back."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for db in idle:
            db.close()

    def _take(self) -> sqlite3.Connection:
        with self._lock:
            if self._closed:
                raise BrokerClosed(f"the sqlite broker for {self._path} is closed")
            if self._idle:
                return self._idle.pop()
        with map_sqlite_exceptions(self._path):
            db = sqlite3.connect(
                self._path, check_same_thread=False, isolation_level=None, timeout=30
            )
            try:
                db.execute(f"PRAGMA synchronous={self._pragma}")
                # No busy handler: every statement runs inside a transaction begun by
                # _sqlite_batch.begin, which waits for the write lock itself.
                db.execute("PRAGMA busy_timeout=0")
            except BaseException:
                db.close()
                raise
        return db

    def _give_back(self, db: sqlite3.Connection) -> None:
        with self._lock:
            if not self._closed:
                self._idle.append(db)
                return
        db.close()
