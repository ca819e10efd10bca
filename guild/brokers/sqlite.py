"""The SQLite broker: the embedded, durable default. One file, no server.

Theory of operation. Every job is a row; its ``status`` is ``ready`` (delayed
when ``ready_at`` is still ahead), ``in_flight`` (held under ``receipt`` until
``lease_expires``), ``done`` or ``dead``. A claim is one ``BEGIN IMMEDIATE``
transaction: jobs whose lease expired go back to ready (or to the dead letters
when their attempts are spent), then one ``UPDATE … RETURNING`` takes the
oldest ready rows of the highest priority by ``(queue, priority, ready_at, id)``
through an index. Several
processes may share the file: WAL lets readers run beside the one writer, and
a writer waits for another's write lock in naps of at most a millisecond
(``_sqlite_batch.begin``) instead of failing. Secondary indexes are partial
(schema 9): each holds the rows of one status only, and a query that means to
use one names that status itself.

Blocking calls run on the broker's database thread (``_sqlite_lane``, one
connection, a ``CapacityLimiter(1)`` saying whose call goes next), never on the
Trio thread. They are not abandoned on cancellation, and no checkpoint follows
them before a method returns, so a claim that happened is never lost to a
cancellation. ``enqueue_here`` (what :class:`guild.Client` calls) enqueues in
the calling thread instead, on connections of its own (``_sqlite_enqueue``).

Durability (``sqlite:path.db?synchronous=…``; docs/brokers.md has the table):
every commit is in the WAL before the call returns, so nothing acknowledged is
lost when a process crashes or is killed. Against a power loss or kernel crash,
``ENQUEUE`` (the default) fsyncs the commits that hold an enqueue, so a job
whose enqueue returned is kept, while claims, starts and acks since the last
fsync may be lost (a job then runs again); ``FULL`` fsyncs every commit;
``NORMAL`` none (the last transactions may be lost, enqueues among them).
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
import trio

from .._codec import ROW_FIELDS, BadRow, ResultJSON
from .._errors import BrokerClosed, BrokerError, BrokerFileReplaced
from .._job import (
    PRIORITIES,
    DeadLetter,
    Delivery,
    Job,
    JobStatus,
    Priority,
    QueueStats,
    Result,
    replace_fields,
)
from .._jobinfo import JobInfo, JobProgress
from .._retention import Retention
from . import _sqlite_cancel, _sqlite_jobinfo, _sqlite_purge, _sqlite_strays
from ._delegate import LedgerDelegate, WorkflowDelegate
from ._protocol import check_purge_args
from ._sqlite_batch import BUSY_TIMEOUT_MS, WriteBatcher
from ._sqlite_enqueue import Producers, decode, job_of, rows_of, store
from ._sqlite_errors import map_sqlite_exceptions
from ._sqlite_lane import Lane, hold_if_free
from ._sqlite_ledger import SqliteLedger
from ._sqlite_migrate import prepare, refuse_foreign
from ._sqlite_workflows import SqliteWorkflows
from ._stored import reading_record

T = TypeVar("T")
_log = structlog.get_logger("guild.brokers.sqlite")
# How often (at most) a call checks that the path still names the open file;
# ``stats`` (the health tick) always checks.
_FILE_CHECK_EVERY = 1.0
_JOB_COLUMNS = (
    "id, queue, payload, attempt, max_attempts, enqueued_at, not_before, timeout, key, trace_id"
)
# Every level, highest first: the claim's ``priority IN`` list, which lets SQLite
# walk the claim index one level at a time (a range on ready_at in each) rather
# than sort every ready row.
_LEVELS = "(" + ", ".join(str(int(level)) for level in PRIORITIES) + ")"
_POLL_START = 0.005
_POLL_MAX = 0.05
_HERE_JOBS = 16
"""Jobs an enqueue may hold and still commit on the Trio thread when alone
(``_sqlite_batch``, "Alone"): a commit of a few jobs is about its fsync; one of
a thousand (``enqueue_many``) is milliseconds of inserts, for the database thread."""
SYNCHRONOUS = ("ENQUEUE", "FULL", "NORMAL")
"""The ``synchronous`` settings, the default first."""


def _file_identity(path: str) -> tuple[int, int] | None:
    """The file's (device, inode); None when there is none at ``path`` (or the
    database is not a plain file: ``:memory:``, an URI)."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return (found.st_dev, found.st_ino)


# Rows per set-based statement: two bound values each, far below SQLite's
# 32,766 variables, and few distinct statements for the statement cache.
_CHUNK = 256


def _chunks(rows: Sequence[T]) -> list[Sequence[T]]:
    return [rows[i : i + _CHUNK] for i in range(0, len(rows), _CHUNK)]


def _pairs(chunk: Sequence[tuple[str, str]]) -> tuple[str, list[str | None]]:
    """A ``VALUES`` list of ``(?,?)`` for ``chunk``, and its parameters.

    Padded with ``(NULL, NULL)`` (which matches no row) to a power of two, so
    that a handful of distinct statements stay in the statement cache."""
    size = 1
    while size < len(chunk):
        size *= 2
    values: list[str | None] = [value for pair in chunk for value in pair]
    values += [None] * (2 * (size - len(chunk)))
    return ",".join(["(?,?)"] * size), values


# A claim takes only rows whose priority is in _LEVELS, so every one it reads is here.
_BY_VALUE = {int(level): level for level in Priority}


class _UndecodableText(Exception):
    """A TEXT value read is not UTF-8 (sqlite3 refuses the whole fetch): read as bytes."""


def _strict_text(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def call(db: sqlite3.Connection) -> T:
        try:
            return fn(db)
        except sqlite3.OperationalError as exc:
            if "Could not decode to UTF-8" in str(exc):
                raise _UndecodableText(str(exc)) from exc
            raise

    return call


def _bytes_text(fn: Callable[[sqlite3.Connection], T]) -> Callable[[sqlite3.Connection], T]:
    def call(db: sqlite3.Connection) -> T:
        db.text_factory = bytes
        try:
            return fn(db)
        finally:
            db.text_factory = str

    return call


def _utf8_where_valid(row: Sequence[Any]) -> tuple[Any, ...]:
    """A row read as bytes, with every value that is UTF-8 text made ``str`` again."""
    return tuple(_utf8(value) for value in row)


def _utf8(value: Any) -> Any:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            return value
    return value


def _create_private(path: str) -> None:
    """Create a missing database file 0600: SQLite gives its -wal and -shm files the
    database file's mode, so jobs, results and keys stay readable by the owner only.
    An existing file keeps its mode; a path that cannot be created is left for
    ``sqlite3.connect`` to report."""
    if path in ("", ":memory:") or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    except OSError:
        return


def _enter_wal(db: sqlite3.Connection, patience: float = 30.0) -> None:
    """Switch to WAL, waiting out other connections that open the same new file.

    Changing the journal mode of a brand-new file needs it to itself, and SQLite
    answers "database is locked" at once instead of calling the busy handler: two
    processes (or a client and a worker) opening one new file together failed.
    """
    deadline = time.monotonic() + patience
    pause = 0.002
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() + pause > deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.1)


class SqliteBroker(LedgerDelegate, WorkflowDelegate):
    """A broker in one SQLite file.

    Open it with ``await SqliteBroker.open(path)`` (or ``guild.open_broker("sqlite:…")``).

    Args:
        connection: an open ``sqlite3`` connection made by :meth:`open`.
        path: the file, for messages.
        key_ttl: seconds an idempotency key holds.
        retention: how long results, finished jobs and dead letters are kept.
        synchronous: which commits are fsynced, as for :meth:`open`.

    Expired rows are deleted by claims, one small batch per claim (see
    ``_sqlite_purge``), once a sweep period (``Retention.sweep_every``) or
    while a backlog is left.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        path: str,
        *,
        key_ttl: float,
        retention: Retention,
        synchronous: str = "NORMAL",
    ) -> None:
        self._db = connection
        self._path = path
        self._key_ttl = key_ttl
        self._retention = retention
        # Written as a finished row's result_expires: its record's end, which is
        # never before its result's (get_result also checks Retention.results).
        self._result_ttl = retention.record
        self._purge_backlog = False
        # Per queue, the rowids still to look through for strays: (next, last).
        # Absent: not begun; (last, last): done (once per queue and broker).
        self._stray_spans: dict[str, tuple[int, int]] = {}
        self._limiter = trio.CapacityLimiter(1)
        self._lane = Lane(f"guild-sqlite {os.path.basename(path)}")
        self._batcher = WriteBatcher(
            connection, path, self._limiter, lane=self._lane, fsync_durable=synchronous == "ENQUEUE"
        )
        self._producers = Producers(path, synchronous)
        self._changed = trio.Event()
        self._closed = False
        self._last_purge = 0.0
        # Absolute: a later chdir must not read as the file being replaced.
        self._stat_path = os.path.abspath(path)
        self._identity = _file_identity(path)
        # The write-ahead log beside it: SQLite removes it only when the last
        # connection closes, so while this one is open it is never legitimately
        # gone (None when there was none to see, and then it is not checked).
        self._wal_identity = _file_identity(self._stat_path + "-wal")
        self._file_checked = time.monotonic()
        self._replaced: str | None = None
        self._ledger = SqliteLedger(self._run, self._write, self.now)
        self._workflows = SqliteWorkflows(self._run, self._write, self.now)

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        key_ttl: float = 86_400.0,
        result_ttl: float | None = None,
        synchronous: str = "ENQUEUE",
        migrate: bool = False,
        retention: Retention | None = None,
    ) -> SqliteBroker:
        """Open the database at ``path``, creating a new one at the current schema.

        Args:
            migrate: bring an older schema up to date in place (one transaction,
                no backup) instead of refusing it; ``guild migrate`` is the way
                with a backup and checks.
            retention: how long finished jobs are kept (:class:`~guild.Retention`).
            result_ttl: the older spelling of ``Retention(results=s, done=s)``.
            synchronous: which commits are fsynced: ``ENQUEUE`` (those holding
                an enqueue), ``FULL`` (every one) or ``NORMAL`` (none; SQLite
                fsyncs at checkpoints). See "Durability" in the module docstring.

        Raises:
            ValueError: ``synchronous`` is none of those.
            BrokerUnavailable: the file cannot be opened or migrated.
            SchemaMismatch: the file's schema is newer than this guild's, or
                older (and ``migrate`` is false).
        """
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be ENQUEUE, FULL or NORMAL, got {synchronous!r}")
        shown = str(path)

        def connect() -> sqlite3.Connection:
            with map_sqlite_exceptions(shown):
                _create_private(shown)
                db = sqlite3.connect(
                    shown, check_same_thread=False, isolation_level=None, timeout=30
                )
                try:
                    refuse_foreign(db, shown)
                    _enter_wal(db)
                    db.execute(f"PRAGMA synchronous={'FULL' if mode == 'FULL' else 'NORMAL'}")
                    db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
                    prepare(db, shown, migrate=migrate)
                except BaseException:
                    db.close()
                    raise
                return db

        connection = await trio.to_thread.run_sync(connect)
        kept = retention or Retention()
        if result_ttl is not None:
            kept = Retention(
                results=result_ttl, done=result_ttl, dead=kept.dead, keep_payload=kept.keep_payload
            )
        return cls(
            connection,
            shown,
            key_ttl=key_ttl,
            retention=kept,
            synchronous=mode,
        )

    def __repr__(self) -> str:
        return f"SqliteBroker({self._path!r})"

    def now(self) -> float:
        return time.time()

    @property
    def retention(self) -> Retention:
        """How long this broker keeps what finished jobs leave behind."""
        return self._retention

    def _check_file(self, *, now: bool = False) -> None:
        """Refuse to go on once the path names another file, or none (see
        :class:`BrokerFileReplaced`): the open connection would keep writing to
        an unlinked inode that no other process serves."""
        if self._replaced is None:
            if self._identity is None:
                return
            tick = time.monotonic()
            if not now and tick - self._file_checked < _FILE_CHECK_EVERY:
                return
            self._file_checked = tick
            found = _file_identity(self._stat_path)
            if found != self._identity:
                self._replaced = "deleted" if found is None else "replaced"
            elif (
                self._wal_identity is None
                or _file_identity(self._stat_path + "-wal") == self._wal_identity
            ):
                return
            else:
                # This connection goes on committing to the unlinked log, unseen,
                # and every other connection fails on the new one ("disk I/O
                # error") while the shared memory counts frames it lacks. Closing
                # this connection copies its log into the file (the checkpoint of
                # the last connection to close), which mends both.
                self._replaced = (
                    "cut off from its write-ahead log (the -wal file beside it was"
                    " deleted or replaced)"
                )
            _log.error("sqlite_file_replaced", path=self._path, what=self._replaced)
        raise BrokerFileReplaced(self._path, self._replaced)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise BrokerClosed(f"the sqlite broker for {self._path} is closed")
        self._check_file()

        def call() -> T:
            self._batcher.reads()  # a write may have left the busy handler off
            with map_sqlite_exceptions(self._path):
                return fn(self._db)

        if not hold_if_free(self._limiter):
            await self._limiter.acquire()
        try:
            return await self._lane.run(call)
        finally:
            self._limiter.release()

    async def _write(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False, here: bool = False
    ) -> T:
        # Writes that wait for the connection together commit together (_sqlite_batch).
        if self._closed:
            raise BrokerClosed(f"the sqlite broker for {self._path} is closed")
        self._check_file()
        return await self._batcher.write(fn, durable=durable, here=here)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # --- producing -------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        now = self.now()
        rows = rows_of(jobs, now)
        stored = await self._write(
            lambda db: store(db, jobs, rows, now, self._key_ttl),
            durable=True,
            here=len(jobs) <= _HERE_JOBS,
        )
        self._wake()
        return stored

    def enqueue_here(self, jobs: Sequence[Job]) -> list[Job]:
        """:meth:`enqueue`, run in the calling thread (any thread, never the Trio
        thread) on a connection of its own: what :class:`guild.Client` calls.

        The same transaction (``_sqlite_enqueue.store``) at the same durability;
        workers of other processes see the jobs when they next poll, and nothing
        of this process is woken (no worker waits on a client's broker).

        Raises:
            BrokerClosed: the broker is closed.
            BrokerFileReplaced: the path names another file than the one opened.
            BrokerUnavailable: the database could not be written.
            PayloadEncodeError: a payload is not JSON; nothing stored.
        """
        if self._closed:
            raise BrokerClosed(f"the sqlite broker for {self._path} is closed")
        self._check_file()
        return self._producers.enqueue(jobs, self.now(), self._key_ttl)

    # --- claiming --------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        *,
        consumer: str,
        limit: int,
        lease: float,
        wait: float = 0.0,
        start: int | None = None,
        max_attempts: int = 5,
    ) -> list[Delivery]:
        deadline = self.now() + wait
        interval = _POLL_START
        started = limit if start is None else min(start, limit)
        while True:
            changed = self._changed
            deliveries = await self._claim_now(queue, consumer, limit, lease, started, max_attempts)
            remaining = deadline - self.now()
            if deliveries or remaining <= 0:
                return deliveries
            # Another process's enqueue shows up only by polling; our own wakes us.
            with trio.move_on_after(min(interval, remaining)):
                await changed.wait()
            interval = min(interval * 2, _POLL_MAX)

    async def _claim_now(
        self, queue: str, consumer: str, limit: int, lease: float, start: int, max_attempts: int
    ) -> list[Delivery]:
        receipt = secrets.token_hex(8) + ":"

        def take(db: sqlite3.Connection, now: float, count: int, started: int) -> list[Any]:
            # The stored attempt counts started runs only: a prefetched row keeps
            # its count until Broker.start (see _protocol). An interrupted job is
            # never started here: its worker runs it alone.
            return db.execute(
                "UPDATE jobs SET status = 'in_flight', attempt = attempt + ? * (1 - interrupted),"
                " started = ? * (1 - interrupted), receipt = ? || id, consumer = ?,"
                " lease_expires = ?, started_at = CASE WHEN ? * (1 - interrupted) > 0"
                " THEN ? ELSE started_at END WHERE rowid IN (SELECT rowid"
                f" FROM jobs WHERE queue = ? AND status = 'ready' AND priority IN {_LEVELS}"
                " AND ready_at <= ? ORDER BY priority DESC, ready_at, id LIMIT ?)"
                f" RETURNING {_JOB_COLUMNS}, ready_at, receipt, started, interrupted, priority",
                (started, started, receipt, consumer, now + lease, started, now, queue, now, count),
            ).fetchall()

        strays: list[tuple[str, str]] = []
        span = self._stray_spans.get(queue)
        swept: list[tuple[int, int]] = []

        def claim(db: sqlite3.Connection) -> tuple[list[tuple[Any, ...]], float]:
            now = self.now()
            self._expire_leases(db, queue, now, max_attempts)
            rows = take(db, now, start, 1) if start > 0 else []
            if limit > start:
                rows += take(db, now, limit - start, 0)
            if not rows and (span is None or span[0] < span[1]):
                # Rows no claim would take, dead-lettered: looked for by a claim
                # that found nothing, a slice of the table at a time, so that a
                # deep backlog neither waits for the look nor holds the write
                # lock through it (reading every row took 0.8 s at 500,000 jobs).
                begun = span or (0, db.execute("SELECT max(rowid) FROM jobs").fetchone()[0] or 0)
                upto = min(begun[0] + _sqlite_strays.STRAY_SLICE, begun[1])
                strays[:] = _sqlite_strays.bury(db, queue, now, self._result_ttl, begun[0], upto)
                swept[:] = [(upto, begun[1])]
            self._purge(db, now)
            return rows, now + lease

        try:
            rows, lease_expires = await self._write(_strict_text(claim))
        except _UndecodableText:
            # A row holds text that is not UTF-8: claim again (the first try was
            # rolled back), reading text as bytes, so that row can be dead-lettered.
            rows, lease_expires = await self._write(_bytes_text(claim))
            rows = [_utf8_where_valid(row) for row in rows]
        if swept:
            self._stray_spans[queue] = swept[0]
        for job_id, reason in strays:
            _log.error("bad_row_dead_lettered", job_id=job_id, reason=reason)
        rows.sort(key=lambda row: (-row[14], row[10], row[0]))
        deliveries = []
        bad: list[tuple[BadRow, Any]] = []
        for row in rows:
            job = decode(row, queue)
            if isinstance(job, BadRow):
                bad.append((job, row[11]))
                continue
            if not row[12]:
                job = replace_fields(job, attempt=job.attempt + 1)
            if row[14]:
                job = replace_fields(job, priority=_BY_VALUE[row[14]])
            deliveries.append(
                Delivery(
                    job=job,
                    receipt=row[11],
                    consumer=consumer,
                    lease_expires=lease_expires,
                    started=bool(row[12]),
                    interrupted=bool(row[13]),
                )
            )
        if bad:
            await self._bury_bad(bad)
        return deliveries

    async def _bury_bad(self, bad: Sequence[tuple[BadRow, Any]]) -> None:
        """Dead-letter rows that are no valid job, with the reason; the claim goes on.

        Shielded: the good jobs of the claim are taken, and a cancellation here
        must not lose them. If it fails, the bad rows come back when their
        leases expire, and the next claim tries again.
        """
        now = self.now()
        rows = [
            (row.reason, now, now, now + self._result_ttl, row.job.id, receipt)
            for row, receipt in bad
        ]
        with trio.CancelScope(shield=True):
            try:
                await self._write(
                    lambda db: db.executemany(
                        "UPDATE jobs SET status = 'dead', receipt = NULL, error = ?,"
                        " traceback = NULL, died_at = ?, finished_at = ?, result_expires = ?"
                        " WHERE id = ? AND status = 'in_flight' AND receipt = ?",
                        rows,
                    )
                )
            except BrokerError as error:
                _log.warning(
                    "bad_rows_not_buried", jobs=[r.job.id for r, _ in bad], error=str(error)
                )
                return
        for row, _ in bad:
            _log.error("bad_row_dead_lettered", job_id=row.job.id, reason=row.reason)

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        now = self.now()

        held = list(dict.fromkeys((d.job.id, d.receipt) for d in deliveries))

        def mark(db: sqlite3.Connection) -> list[Delivery]:
            # One statement per chunk, not one per job (a row started already
            # keeps its count: attempt + 1 - started).
            attempts: dict[tuple[str, str], int] = {}
            for chunk in _chunks(held):
                marks, values = _pairs(chunk)
                for job_id, receipt, attempt in db.execute(
                    f"WITH r(id, receipt) AS (VALUES {marks})"
                    " UPDATE jobs SET attempt = attempt + 1 - started, started = 1,"
                    " started_at = CASE WHEN started = 1 THEN started_at ELSE ? END"
                    " FROM r WHERE jobs.id = r.id AND jobs.status = 'in_flight'"
                    " AND jobs.receipt = r.receipt AND jobs.lease_expires > ?"
                    " RETURNING jobs.id, jobs.receipt, jobs.attempt",
                    (*values, now, now),
                ):
                    attempts[(job_id, receipt)] = attempt
            started = []
            for delivery in deliveries:
                attempt = attempts.get((delivery.job.id, delivery.receipt))
                if attempt is not None:
                    started.append(
                        Delivery(
                            job=replace_fields(delivery.job, attempt=attempt),
                            receipt=delivery.receipt,
                            consumer=delivery.consumer,
                            lease_expires=delivery.lease_expires,
                            interrupted=delivery.interrupted,
                        )
                    )
            return started

        # Committed before any of these handlers runs: a run that kills its
        # process is counted, so a poison job cannot come back for ever.
        return await self._write(mark)

    def _expire_leases(
        self, db: sqlite3.Connection, queue: str, now: float, max_attempts: int
    ) -> None:
        # A started run whose lease expired was an attempt (its process died
        # mid-run): dead when it was the last. An unstarted one just comes back.
        # One with a cancel request ends cancelled instead (folded into the same
        # two statements: this runs in every claim).
        db.execute(
            "UPDATE jobs SET status = 'dead', receipt = NULL, died_at = ?, traceback = NULL,"
            " error = 'lease expired on attempt ' || attempt || ' of '"
            " || COALESCE(NULLIF(max_attempts, 0), ?), finished_at = ?, result_expires = ?"
            " WHERE queue = ? AND status = 'in_flight' AND lease_expires <= ? AND started = 1"
            " AND attempt >= COALESCE(NULLIF(max_attempts, 0), ?) AND cancel_requested = 0",
            (now, max_attempts, now, now + self._result_ttl, queue, now, max_attempts),
        )
        back = db.execute(
            "UPDATE jobs SET status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'ready' END,"
            " ready_at = lease_expires, receipt = NULL, interrupted = MAX(interrupted, started),"
            " error = CASE WHEN cancel_requested THEN 'cancelled' ELSE error END,"
            " finished_at = CASE WHEN cancel_requested THEN ? ELSE finished_at END,"
            " result_expires = CASE WHEN cancel_requested THEN ? ELSE result_expires END"
            " WHERE queue = ? AND status = 'in_flight' AND lease_expires <= ?"
            " RETURNING cancel_requested",
            (now, now + self._result_ttl, queue, now),
        ).fetchall()
        if back:
            _sqlite_cancel.count(db, [queue for (cancelled,) in back if cancelled])

    def _purge(self, db: sqlite3.Connection, now: float) -> None:
        # Rows past their retention: one small batch in the claim's transaction,
        # once a sweep period (a minute at most), or at each claim while the last
        # batch left some behind, so no claim holds the write lock long.
        if not self._purge_backlog and now - self._last_purge < self._retention.sweep_every:
            return
        self._last_purge = now
        self._purge_backlog = _sqlite_purge.expired(db, now, self._retention).more

    async def purge(
        self, queue: str, statuses: Collection[JobStatus], *, older_than: float | None = None
    ) -> int:
        """Delete the jobs of ``queue`` in ``statuses`` (see ``guild.brokers.Purgeable``),
        one short transaction at a time (``_sqlite_purge``: bounded in rows and time)."""
        check_purge_args(statuses, older_than)
        now = self.now()
        cutoff = None if older_than is None else now - older_than
        return await self._sweep(lambda db: _sqlite_purge.purge(db, queue, statuses, now, cutoff))

    async def purge_expired(self) -> int:
        """Delete every row past its retention now, in batches; returns how many.

        Claims do this on their own, a batch at a time; this is for a broker no
        worker claims from (and for measuring a batch's lock hold)."""
        return await self._sweep(lambda db: _sqlite_purge.expired(db, self.now(), self._retention))

    async def _sweep(self, batch: Callable[[sqlite3.Connection], _sqlite_purge.Swept]) -> int:
        """Run ``batch`` in transactions of its own until it leaves nothing due,
        with the write lock left free between them; returns the rows deleted."""
        total = 0
        while True:
            began = trio.current_time()
            swept = await self._write(batch)
            total += swept.rows
            if not swept.more:
                return total
            await _sqlite_purge.pause(trio.current_time() - began)

    # --- settling --------------------------------------------------------------

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        now = self.now()
        keep = int(self._retention.keep_payload)
        # A job acked twice in one call: its first result stands, as when acked twice.
        results: dict[str, ResultJSON] = {}
        for delivery, text in done:
            results.setdefault(delivery.job.id, text)
        pairs = list(results.items())

        def finish(db: sqlite3.Connection) -> None:
            # One statement per chunk of jobs, not one per job.
            counts: dict[str, int] = {}
            for chunk in _chunks(pairs):
                marks, values = _pairs(chunk)
                for (queue,) in db.execute(
                    f"WITH r(id, result) AS (VALUES {marks})"
                    " UPDATE jobs SET status = 'done', result = r.result, finished_at = ?,"
                    " result_expires = ?, receipt = NULL,"
                    " payload = CASE WHEN ? THEN payload ELSE 'null' END FROM r"
                    " WHERE jobs.id = r.id AND jobs.status NOT IN ('done', 'dead', 'cancelled')"
                    " RETURNING jobs.queue",
                    (*values, now, now + self._result_ttl, keep),
                ):
                    counts[queue] = counts.get(queue, 0) + 1
            db.executemany(
                "INSERT INTO queue_counts (queue, done) VALUES (?, ?) ON CONFLICT (queue)"
                " DO UPDATE SET done = done + excluded.done",
                list(counts.items()),
            )

        await self._write(finish)
        self._wake()

    async def retry(
        self, delivery: Delivery, *, at: float, error: str, traceback: str | None = None
    ) -> None:
        now = self.now()
        held = (delivery.job.id, delivery.receipt)

        def again(db: sqlite3.Connection) -> None:
            # A job with a cancel request is not run again: it ends cancelled.
            _sqlite_cancel.end_requested(db, "id = ? AND receipt = ?", held, now, self._result_ttl)
            db.execute(
                "UPDATE jobs SET status = 'ready', ready_at = ?, receipt = NULL, error = ?,"
                " traceback = ?, interrupted = 0 WHERE id = ? AND status = 'in_flight'"
                " AND receipt = ?",
                (max(at, now), error, traceback, *held),
            )

        await self._write(again)
        self._wake()

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        now = self.now()
        await self._write(
            lambda db: db.execute(
                "UPDATE jobs SET status = 'dead', receipt = NULL, error = ?, traceback = ?,"
                " died_at = ?, finished_at = ?, result_expires = ?"
                " WHERE id = ? AND status = 'in_flight' AND receipt = ?",
                (
                    error,
                    traceback,
                    now,
                    now,
                    now + self._result_ttl,
                    delivery.job.id,
                    delivery.receipt,
                ),
            )
        )
        self._wake()

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        now = self.now()
        rows = [(now, d.job.id, d.receipt) for d in deliveries]

        def give_back(db: sqlite3.Connection) -> None:
            for _, job_id, receipt in rows:
                _sqlite_cancel.end_requested(
                    db, "id = ? AND receipt = ?", (job_id, receipt), now, self._result_ttl
                )
            db.executemany(
                "UPDATE jobs SET status = 'ready', ready_at = ?, receipt = NULL,"
                " attempt = attempt - started, started = 0 WHERE id = ? AND status = 'in_flight'"
                " AND receipt = ?",
                rows,
            )

        await self._write(give_back)
        self._wake()

    async def release_consumers(self, prefix: str) -> int:
        now = self.now()

        def give_back(db: sqlite3.Connection) -> int:
            ended = _sqlite_cancel.end_requested(
                db, "substr(consumer, 1, ?) = ?", (len(prefix), prefix), now, self._result_ttl
            )
            return ended + int(
                db.execute(
                    "UPDATE jobs SET status = 'ready', ready_at = ?, receipt = NULL,"
                    " attempt = attempt - started, started = 0 WHERE status = 'in_flight'"
                    " AND substr(consumer, 1, ?) = ?",
                    (now, len(prefix), prefix),
                ).rowcount
            )

        count = await self._write(give_back)
        self._wake()
        return count

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        now = self.now()
        expires = now + lease

        def renew(db: sqlite3.Connection) -> list[Delivery]:
            kept = []
            for delivery in deliveries:
                hit = db.execute(
                    "UPDATE jobs SET lease_expires = ? WHERE id = ? AND status = 'in_flight'"
                    " AND receipt = ? AND lease_expires > ? RETURNING id",
                    (expires, delivery.job.id, delivery.receipt, now),
                ).fetchone()
                if hit is not None:
                    kept.append(
                        Delivery(
                            job=delivery.job,
                            receipt=delivery.receipt,
                            consumer=delivery.consumer,
                            lease_expires=expires,
                            started=delivery.started,
                            interrupted=delivery.interrupted,
                        )
                    )
            return kept

        return await self._write(renew)

    # --- results, stats, dead letters ---------------------------------------------

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        now = self.now()
        answered = await self._write(
            lambda db: _sqlite_cancel.cancel(db, job_ids, now, self._result_ttl)
        )
        self._wake()
        return answered

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        return await self._run(lambda db: _sqlite_cancel.requested(db, job_ids))

    async def finish_cancelled(self, deliveries: Sequence[Delivery]) -> None:
        now = self.now()
        await self._write(lambda db: _sqlite_cancel.finish(db, deliveries, now, self._result_ttl))
        self._wake()

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        deadline = self.now() + wait
        interval = _POLL_START
        while True:
            changed = self._changed
            found = await self._run(lambda db: self._result(db, job_id))
            remaining = deadline - self.now()
            if found is not None or remaining <= 0:
                return found
            with trio.move_on_after(min(interval, remaining)):
                await changed.wait()
            interval = min(interval * 2, _POLL_MAX)

    async def get_results(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """The stored results of ``job_ids`` (those with none are left out), in
        one trip to the database thread: what a workflow coordinator's pass reads."""
        if not job_ids:
            await trio.lowlevel.checkpoint()
            return {}
        wanted = list(dict.fromkeys(job_ids))

        def read(db: sqlite3.Connection) -> dict[str, Result]:
            found: dict[str, Result] = {}
            for id_ in wanted:
                result = self._result(db, id_)
                if result is not None:
                    found[id_] = result
            return found

        return await self._run(read)

    async def job_info(self, job_id: str) -> JobInfo | None:
        now = self.now()
        with reading_record(job_id, "row"):
            return await self._read_any_text(lambda db: _sqlite_jobinfo.select(db, job_id, now))

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        if not updates:
            await trio.lowlevel.checkpoint()
            return
        await self._write(lambda db: _sqlite_jobinfo.set_progress(db, updates))

    def _result(self, db: sqlite3.Connection, job_id: str) -> Result | None:
        row = db.execute(
            "SELECT queue, status, result, error, attempt, finished_at FROM jobs WHERE id = ?"
            " AND (status = 'dead' OR (status IN ('done', 'cancelled') AND result_expires > ?"
            " AND finished_at > ?))",
            (job_id, self.now(), self.now() - self._retention.results),
        ).fetchone()
        if row is None:
            return None
        with reading_record(job_id, "result"):
            return Result(
                job_id=job_id,
                queue=row[0],
                status=JobStatus(row[1]),
                value=json.loads(row[2]) if row[2] is not None else None,
                error=row[3] if row[1] in ("dead", "cancelled") else None,
                attempts=row[4],
                finished_at=row[5] or 0.0,
            )

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        self._check_file(now=True)
        now = self.now()

        def count(db: sqlite3.Connection) -> dict[str, QueueStats]:
            # Three index-only reads, one per partial index (schema 9): the
            # finished rows, most of the table, are never read.
            counted: dict[str, list[int]] = {}
            for sql, params in (
                (
                    "SELECT queue, SUM(ready_at <= ?), SUM(ready_at > ?), 0, 0 FROM jobs"
                    " WHERE status = 'ready' GROUP BY queue",
                    (now, now),
                ),
                (
                    "SELECT queue, SUM(lease_expires <= ?), 0, SUM(lease_expires > ?), 0"
                    " FROM jobs WHERE status = 'in_flight' GROUP BY queue",
                    (now, now),
                ),
                (
                    "SELECT queue, 0, 0, 0, count(*) FROM jobs WHERE status = 'dead'"
                    " GROUP BY queue",
                    (),
                ),
            ):
                for name, *values in db.execute(sql, params):
                    total = counted.setdefault(name, [0, 0, 0, 0])
                    for i, value in enumerate(values):
                        total[i] += value
            ended: dict[str, tuple[int, int]] = {
                row[0]: (row[1], row[2])
                for row in db.execute("SELECT queue, done, cancelled FROM queue_counts")
            }
            found = {
                name: QueueStats(
                    queue=name,
                    ready=ready,
                    delayed=delayed,
                    in_flight=in_flight,
                    done=ended.get(name, (0, 0))[0],
                    dead=dead,
                    cancelled=ended.get(name, (0, 0))[1],
                )
                for name, (ready, delayed, in_flight, dead) in counted.items()
            }
            for name, (done, cancelled) in ended.items():
                found.setdefault(name, QueueStats(queue=name, done=done, cancelled=cancelled))
            if queues is None:
                return found
            return {name: found.get(name, QueueStats(queue=name)) for name in queues}

        def counted_at_once(db: sqlite3.Connection) -> dict[str, QueueStats]:
            # One read transaction, so both statements see the same snapshot: read
            # one after the other, an ack committed by another process between them
            # showed a job both in flight and in the done count.
            db.execute("BEGIN")
            try:
                return count(db)
            finally:
                db.execute("COMMIT")

        return await self._run(counted_at_once)

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        def select(db: sqlite3.Connection) -> list[DeadLetter]:
            sql = (
                f"SELECT {_JOB_COLUMNS}, error, traceback, died_at, priority FROM jobs"
                " WHERE status = 'dead'"
            )
            params: tuple[Any, ...] = ()
            if queue is not None:
                sql += " AND queue = ?"
                params = (queue,)
            rows = db.execute(sql + " ORDER BY died_at, id LIMIT ?", (*params, limit)).fetchall()
            return [_letter(row) for row in rows]

        return await self._read_any_text(select)

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        def select(db: sqlite3.Connection) -> DeadLetter | None:
            row = db.execute(
                f"SELECT {_JOB_COLUMNS}, error, traceback, died_at, priority FROM jobs"
                " WHERE id = ? AND status = 'dead'",
                (job_id,),
            ).fetchone()
            return _letter(row) if row is not None else None

        return await self._read_any_text(select)

    async def _read_any_text(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in a read; again reading text as bytes if some of it is not UTF-8
        (a dead letter of a corrupt row must still be listed)."""
        try:
            return await self._run(_strict_text(fn))
        except _UndecodableText:
            return await self._run(_bytes_text(fn))

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        now = self.now()

        def requeue(db: sqlite3.Connection) -> int:
            sql = (
                "UPDATE jobs SET status = 'ready', ready_at = ?, attempt = 0, interrupted = 0,"
                " not_before = NULL, cancel_requested = 0,"
                " error = NULL, traceback = NULL, died_at = NULL, result = NULL,"
                " finished_at = NULL WHERE status = 'dead'"
            )
            params: list[Any] = [now]
            if queue is not None:
                sql += " AND queue = ?"
                params.append(queue)
            if job_ids is None:
                return db.execute(sql, params).rowcount
            return sum(db.execute(sql + " AND id = ?", [*params, i]).rowcount for i in job_ids)

        count = await self._write(requeue)
        self._wake()
        return count

    async def store_raw_for_test(self, queue: str, fields: Mapping[str, str | bytes]) -> bool:
        """Store a row as given, ready now (the ``RawStorable`` test hook).

        Text is bound as text (so column affinity applies, as for any writer);
        bytes are stored as TEXT byte for byte, even when not UTF-8. The row is
        filed under ``queue`` (the column claims select on), whatever
        ``fields["queue"]`` says. Returns False, storing nothing, when a
        ``NOT NULL`` column is left out.
        """
        now = self.now()

        def insert(db: sqlite3.Connection) -> bool:
            required = {row[1] for row in db.execute("PRAGMA table_info(jobs)") if row[3]}
            given = {name: value for name, value in fields.items() if name in ROW_FIELDS}
            given.pop("queue", None)
            if required & set(ROW_FIELDS) - {"queue"} - set(given):
                return False
            names = ", ".join([*given, "queue", "status", "ready_at"])
            marks = ["CAST(? AS TEXT)" if isinstance(v, bytes) else "?" for v in given.values()]
            db.execute(
                f"INSERT INTO jobs ({names}) VALUES ({', '.join(marks)}, ?, 'ready', ?)",
                [*given.values(), queue, now],
            )
            return True

        stored = await self._write(insert)
        self._wake()
        return stored

    async def aclose(self) -> None:
        if self._closed:
            await trio.lowlevel.checkpoint()
            return
        self._closed = True
        self._wake()
        self._producers.close()
        try:
            async with self._limiter:
                await self._lane.run(self._db.close)
        finally:
            self._lane.close()


def _letter(row: Sequence[Any]) -> DeadLetter:
    row = _utf8_where_valid(row)
    error, trace = (v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in row[10:12])
    job = job_of(row)
    if row[13]:  # the priority column; a normal job's is 0, the Job default
        job = replace_fields(job, priority=_sqlite_jobinfo.level_of(row[13]))
    return DeadLetter(job=job, error=error or "", traceback=trace, died_at=row[12] or 0.0)
