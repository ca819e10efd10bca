"""Group commit for the SQLite broker: writes that wait together commit together.

Each write is a function of the connection. Writes join the batch that is
filling; the first caller to join it, its leader, waits for the connection (the
broker's ``CapacityLimiter(1)``, shared with reads) for them all, while the
others wait for the batch to be done. With the connection, the leader takes the
batch (later writes start the next one) and runs it in one ``BEGIN IMMEDIATE``
transaction in one call on the database thread (``_sqlite_lane``): a worker's
ack, the start of its next prefetched jobs and its next claim, when they come
together, cost one commit and one hand-off to the database thread instead of
three, and so do the one-job enqueues of many tasks at once. The callers of a
batch all wake when it is done, in one pass of the scheduler: when each waited
for the connection in turn only to find its write done, 16 tasks enqueueing at
once took 16 passes per commit.

Each write still succeeds or fails on its own: when one raises, the shared
transaction is rolled back and every write of the batch runs again alone, in
its own transaction, exactly as it would have without batching (a write is a
pure function of the connection, so running it again is safe). A commit that
fails fails every write of the batch.

Durability: a write marked ``durable`` (an enqueue) commits with
``synchronous=FULL`` when the broker runs at ``synchronous=ENQUEUE`` (its
default), so its commit is fsynced before its caller hears it is stored; the
other writes commit at ``NORMAL``. A batch holding one durable write is
fsynced whole, and that fsync also covers every earlier commit in the WAL.

Waiting for another process: ``BEGIN IMMEDIATE`` is tried with no busy
handler and, while another connection holds the write lock, again after naps
of at most ``NAP_MAX`` (:func:`begin`). SQLite's own handler (``busy_timeout``)
sleeps 1, 2, 5, 10 … 100 ms between tries, so a second worker process waiting
behind transactions of a millisecond or two overslept each of them, and found
the lock taken again when it woke: a second process added almost nothing
(1.02x, issue 14). The batcher turns the handler off once, for a run of writes,
and on again only before the next read (:meth:`WriteBatcher.reads`): toggling it
around every ``BEGIN`` was two statements more in every one-job enqueue.

Alone: a lone small enqueue (a durable write marked ``here``: the broker marks
enqueues of up to 16 jobs) that finds the connection free and no batch to join
commits on the Trio thread itself when the run has nothing else to do: no other
task runnable, no call from another thread queued, no deadline within
``HERE_MAX``. The hand-off to the database thread and back cost more than the
commit's own SQL: at ``synchronous=FULL`` both threads sleep through the fsync,
and each wakes from it at a cost (one caller, one job a call, on a loaded 2-core
VM: a median 329 µs a call through the database thread, 258 on the Trio thread,
Huey 177; 230 µs of CPU against 163, Huey 94; 27 system calls against 16, Huey
12.5; one fsync either way). The run is blocked only while nothing in it could
have run, and at most for one commit: only while the last commit holding a
durable write took under ``HERE_MAX`` (the fsync's 0.1-0.3 ms on the test disk;
a slower one, or a failed write, sends the next ones to the database thread,
whose commits are timed in turn); the write lock is tried once (while another
connection holds it, the write goes to the database thread, which waits for it
in naps as usual); and SQLite's WAL checkpoint (milliseconds, tens on a slow
disk) never runs there: the Trio thread's commits run with ``wal_autocheckpoint``
off, and every ``HERE_RUN``-th lone write in a row goes to the database thread,
whose commit checkpoints as SQLite does when the log has grown past its limit.
While the disk is short of room (``LOW_ROOM``) every write goes to the database
thread.

Cancellation: a caller cancelled while its write is still queued takes it back
(nothing ran), and a leader that leaves so hands the lead to another caller of
its batch; once the batch is taken, a caller waits, shielded, for the outcome,
so a write that happened is never reported as not done. The leader runs a batch
shielded when it holds the writes of others.
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import attrs
import trio

from ._sqlite_errors import map_sqlite_exceptions
from ._sqlite_lane import Lane, hold_if_free

T = TypeVar("T")

NAP_MIN = 0.0001
NAP_MAX = 0.001
"""Seconds between tries for the write lock: from ``NAP_MIN``, doubling to ``NAP_MAX``."""

PATIENCE = 30.0
"""Seconds a write waits for another connection's write lock before it fails
("database is locked"), as the connection's ``busy_timeout``."""

BUSY_TIMEOUT_MS = int(PATIENCE * 1000)


_DEFAULT_AUTOCHECKPOINT = 1000  # SQLite's

ROOMY_AUTOCHECKPOINT = 16
"""Pages of write-ahead log after which a connection that has found its disk full
checkpoints (SQLite's default is 1,000, 4 MB). The log grows until a checkpoint
lets the next write start it over, so on a disk with less free than that it
fills whatever is freed again before its first checkpoint, and the disk never
stops being full; kept small, the log is reused instead."""


LOW_ROOM = 64 * 1024 * 1024
"""Free bytes on the database's filesystem below which the broker's connection
checkpoints every ``ROOMY_AUTOCHECKPOINT`` pages: a log that grew toward SQLite's
4 MB before its first checkpoint could take the last of the room, and then no
checkpoint can grow the database to empty it, so the disk stays full."""

ROOM_CHECK_EVERY = 1.0
"""Seconds between looks at the free room (a ``statvfs``) by the broker's connection."""

HERE_MAX = 0.001
"""Seconds: a lone enqueue commits on the Trio thread only while the last commit
holding a durable write took less, and no deadline of the run is nearer (see
the module's "Alone")."""

HERE_RUN = 64
"""Lone writes committed on the Trio thread in a row, at most: the next goes to
the database thread, where SQLite's checkpoint runs if the log is due one."""


def _disk_full(error: BaseException) -> bool:
    cause = error if isinstance(error, sqlite3.Error) else error.__cause__
    code = getattr(cause, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == sqlite3.SQLITE_FULL


def make_room_if_full(db: sqlite3.Connection, error: BaseException) -> None:
    """After ``error`` (sqlite3's, or guild's from it): if the disk was full, copy
    what the log holds into the database and checkpoint early from now on (see
    ``ROOMY_AUTOCHECKPOINT``), so that the room freed goes to the jobs. A
    passive checkpoint: it waits for no other connection. Failing is fine: the
    disk is still full, and the next write that finds it so tries again."""
    if not _disk_full(error) or db.in_transaction:
        return
    try:
        db.execute(f"PRAGMA wal_autocheckpoint={ROOMY_AUTOCHECKPOINT}")
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error:
        return


def _locked(error: sqlite3.OperationalError) -> bool:
    # The primary code of the extended one (SQLITE_BUSY_RECOVERY and the like).
    return error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY


def begin(
    db: sqlite3.Connection,
    *,
    patience: float = PATIENCE,
    nap: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    busy_handler: bool = True,
) -> None:
    """``BEGIN IMMEDIATE``, trying again after short naps while another connection
    holds the write lock (see the module docstring); after ``patience`` seconds
    the last "database is locked" is raised.

    The connection's busy handler is off for the tries and on again after, so
    every other statement still waits ``busy_timeout`` as before. A connection
    that runs with none (``busy_handler=False``, ``busy_timeout=0``: one that only
    writes, in transactions begun here) saves those two statements."""
    if not busy_handler:
        _begin(db, patience, nap, clock)
        return
    db.execute("PRAGMA busy_timeout=0")
    try:
        _begin(db, patience, nap, clock)
    finally:
        db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")


def _begin(
    db: sqlite3.Connection,
    patience: float,
    nap: Callable[[float], None],
    clock: Callable[[], float],
) -> None:
    deadline = clock() + patience
    pause = NAP_MIN
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as error:
            if not _locked(error) or clock() + pause > deadline:
                raise
        nap(pause)
        pause = min(pause * 2, NAP_MAX)


@attrs.define(slots=True, eq=False)
class _Write(Generic[T]):
    fn: Callable[[sqlite3.Connection], T]
    durable: bool = False
    here: bool = False
    settled: bool = False
    value: Any = None
    error: BaseException | None = None

    def succeed(self, value: Any) -> None:
        self.value, self.settled = value, True

    def fail(self, error: BaseException) -> None:
        self.error, self.settled = error, True

    def outcome(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[no-any-return]


@attrs.define(slots=True, eq=False)
class _Batch:
    """Writes that wait for the connection together."""

    writes: list[_Write[Any]]
    led: bool = True
    """A caller of the batch waits for the connection on its behalf."""
    taken: bool = False
    """Its leader holds the connection: no write joins or leaves it any more."""
    wake: trio.Event | None = None
    """Set when the batch is done, or its leader left; made by the first caller to wait."""

    def waker(self) -> trio.Event:
        if self.wake is None:
            self.wake = trio.Event()
        return self.wake

    def rouse(self) -> None:
        """Wake every caller waiting on the batch."""
        if self.wake is not None:
            woken, self.wake = self.wake, None
            woken.set()


def _commit_or_roll_back(db: sqlite3.Connection) -> None:
    try:
        db.execute("COMMIT")
    except BaseException:
        # A failed COMMIT may leave the transaction open: the next BEGIN would fail.
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _finish(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """``fn`` in the transaction begun on ``db``, committed; rolled back if it raises."""
    try:
        value = fn(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    _commit_or_roll_back(db)
    return value


def transaction(
    db: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    path: str,
    *,
    busy_handler: bool = True,
) -> T:
    """``fn`` in a ``BEGIN IMMEDIATE`` transaction of its own on ``db``, committed;
    rolled back if it raises. sqlite3 errors come out as guild's. ``busy_handler``:
    as for :func:`begin`."""
    with map_sqlite_exceptions(path):
        try:
            begin(db, busy_handler=busy_handler)
            return _finish(db, fn)
        except sqlite3.Error as error:
            make_room_if_full(db, error)
            raise


def _alone(db: sqlite3.Connection, write: _Write[Any], path: str) -> None:
    """``write`` in its own transaction (the unbatched path), on a connection whose
    busy handler is off (see :meth:`WriteBatcher.reads`)."""
    try:
        value = transaction(db, write.fn, path, busy_handler=False)
    except BaseException as error:  # raised in the write's caller
        write.fail(error)
    else:
        write.succeed(value)


def _alone_if_free(db: sqlite3.Connection, write: _Write[Any], path: str) -> bool:
    """``write`` in its own transaction if the write lock can be had at once; False
    (nothing ran) if not: another connection holds it, or ``BEGIN`` failed, which
    the database thread's :func:`_alone` then waits for or reports. A full disk
    is left to the database thread too (:func:`make_room_if_full` checkpoints)."""
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.Error:
        return False
    try:
        with map_sqlite_exceptions(path):
            value = _finish(db, write.fn)
    except BaseException as error:  # raised in the write's caller
        write.fail(error)
    else:
        write.succeed(value)
    return True


def _together(db: sqlite3.Connection, writes: list[_Write[Any]]) -> list[Any] | None:
    """The values of ``writes`` run in one transaction, or None (rolled back) if one
    raised; the connection's busy handler is off (see :meth:`WriteBatcher.reads`)."""
    begin(db, busy_handler=False)
    try:
        values = [write.fn(db) for write in writes]
    except BaseException as error:
        if db.in_transaction:
            db.execute("ROLLBACK")
        if isinstance(error, Exception):
            return None
        raise
    _commit_or_roll_back(db)
    return values


class WriteBatcher:
    """Queues writes to one connection and commits those that wait together at once.

    Args:
        db: the connection (used only while holding ``limiter``).
        path: the file, for error messages.
        limiter: the connection's ``CapacityLimiter(1)``, shared with reads.
        lane: the connection's thread, where batches run.
        fsync_durable: switch the connection (at ``synchronous=NORMAL``) to
            ``FULL`` for the commits that hold a durable write.
    """

    def __init__(
        self,
        db: sqlite3.Connection,
        path: str,
        limiter: trio.CapacityLimiter,
        *,
        lane: Lane,
        fsync_durable: bool = False,
    ) -> None:
        self._db = db
        self._path = path
        self._limiter = limiter
        self._lane = lane
        self._fsync_durable = fsync_durable
        self._full = False  # the connection's synchronous is FULL now
        # The connection's busy_timeout is 0 now: set by a write, undone by ``reads``.
        self._busy_off = False
        self._filling: _Batch | None = None  # the batch new writes join
        # The last batch held the enqueues of several callers (producers that may
        # enqueue again at once; a worker's claims and acks are not waited for so).
        self._crowded = False
        self._directory = os.path.dirname(os.path.abspath(path))
        self._room_checked = -math.inf
        self._low_room = False  # checkpointing every ROOMY_AUTOCHECKPOINT pages
        # Seconds the last commit holding a durable write took (none yet: as if slow).
        self._durable_took = math.inf
        self._here = 0  # lone writes committed on the Trio thread since the last batch
        self._checkpoints_off = False  # wal_autocheckpoint=0, set for those writes

    async def write(
        self, fn: Callable[[sqlite3.Connection], T], *, durable: bool = False, here: bool = False
    ) -> T:
        """Run ``fn`` in a write transaction, perhaps shared with other queued writes;
        ``durable``: fsynced at commit (see the module's "Durability"); ``here``: a
        small durable write, which may commit on the Trio thread (the module's "Alone")."""
        write: _Write[T] = _Write(fn, durable, here and durable)
        batch = self._filling
        if batch is None:
            batch = self._filling = _Batch([write])
            return await self._lead(batch, write)
        batch.writes.append(write)
        return await self._follow(batch, write)

    async def _lead(self, batch: _Batch, write: _Write[T]) -> T:
        """Wait for the connection for ``batch``, then run it; ``write``'s outcome."""
        if not hold_if_free(self._limiter):
            try:
                await self._limiter.acquire()
            except BaseException:
                self._leave(batch, write)
                batch.led = False
                batch.rouse()  # another caller of the batch, if any, leads it now
                raise
        elif self._crowded:
            # The callers of the last batch, woken together, may be about to write
            # again: passes of the scheduler until one adds no write let them join
            # this batch, where the first of them alone went at once and the rest
            # made the next (commits of 1 and 15 writes in turn, for 16 callers).
            seen = 0
            await trio.lowlevel.cancel_shielded_checkpoint()
            while len(batch.writes) > seen:
                seen = len(batch.writes)
                await trio.lowlevel.cancel_shielded_checkpoint()
        elif write.here and self._quiet() and await self._lead_here(batch, write):
            return write.outcome()
        try:
            if self._filling is batch:
                self._filling = None
            batch.taken = True
            writes = batch.writes
            # Only producers' enqueues (the durable writes): after a worker's claim
            # and ack, the passes cost its round trip (p99 1.2 -> 5-8 ms) and its drain.
            self._crowded = len(writes) > 1 and all(queued.durable for queued in writes)
            try:
                if len(writes) == 1:
                    # Its own write alone: a cancel may still stop it before it runs.
                    await self._lane.run(lambda: self._commit(writes))
                else:
                    # Shielded: the writes of other callers are in it, and must run.
                    with trio.CancelScope(shield=True):
                        await self._lane.run(lambda: self._commit(writes))
            except BaseException as error:  # no thread: nothing ran
                for queued in writes:
                    if not queued.settled:
                        queued.fail(error)
        finally:
            self._limiter.release()
            batch.rouse()
        return write.outcome()

    def _quiet(self) -> bool:
        """A lone small durable write may commit on the Trio thread (the module's "Alone")."""
        if self._durable_took >= HERE_MAX or self._here >= HERE_RUN or self._low_room:
            return False
        run = trio.lowlevel.current_statistics()
        return (
            run.tasks_runnable == 0
            and run.run_sync_soon_queue_size == 0
            and run.seconds_to_next_deadline > HERE_MAX
        )

    async def _lead_here(self, batch: _Batch, write: _Write[Any]) -> bool:
        """Run ``batch``, ``write`` alone, on the Trio thread, holding the connection;
        True once done (the connection released, the batch's callers woken), False
        if the write lock was not to be had at once (nothing ran; the connection is
        still held, for the database thread to wait for the lock)."""
        if self._filling is batch:
            self._filling = None
        batch.taken = True
        self._crowded = False
        try:
            await trio.lowlevel.checkpoint_if_cancelled()
            if not self._commit_here(write):
                return False
        except BaseException as error:  # cancelled: nothing ran
            write.fail(error)
        self._limiter.release()
        batch.rouse()
        # The call's schedule point, after the commit: other tasks get their turn.
        await trio.lowlevel.cancel_shielded_checkpoint()
        return True

    @trio.lowlevel.enable_ki_protection  # a Ctrl-C mid-commit comes at the next checkpoint
    def _commit_here(self, write: _Write[Any]) -> bool:
        """``write`` alone on the calling (Trio) thread; False if it did not run."""
        started = time.perf_counter()
        try:
            self._writes()
            self._synchronous([write])
            if not self._checkpoints_off:
                # A checkpoint could stall the run for milliseconds: the database
                # thread's next commit runs it (see _checkpoints_on).
                self._db.execute("PRAGMA wal_autocheckpoint=0")
                self._checkpoints_off = True
        except Exception:  # the database thread's attempt reports it
            return False
        if not _alone_if_free(self._db, write, self._path):
            return False
        self._here += 1
        # After a failure the next write goes to the database thread, which
        # makes room on a full disk, and whose commit is timed afresh.
        failed = write.error is not None
        self._durable_took = math.inf if failed else time.perf_counter() - started
        return True

    def _checkpoints_on(self) -> None:
        """Let SQLite checkpoint at this commit again, if the Trio thread's commits
        turned it off; on the database thread, outside any transaction."""
        self._here = 0
        if self._checkpoints_off:
            pages = ROOMY_AUTOCHECKPOINT if self._low_room else _DEFAULT_AUTOCHECKPOINT
            try:
                self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
            except sqlite3.Error:
                return  # a setting, not the batch's writes: the next commit tries again
            self._checkpoints_off = False

    async def _follow(self, batch: _Batch, write: _Write[T]) -> T:
        """Wait for ``batch`` to be run by its leader (or lead it, if its leader left)."""
        while not write.settled:
            try:
                await batch.waker().wait()
            except BaseException:
                if not batch.taken:
                    self._leave(batch, write)
                    raise
                # Its leader runs it: the outcome comes once the batch is done.
                with trio.CancelScope(shield=True):
                    while not write.settled:
                        await batch.waker().wait()
                break
            if not batch.led and not write.settled:
                batch.led = True
                return await self._lead(batch, write)
        return write.outcome()

    def _leave(self, batch: _Batch, write: _Write[Any]) -> None:
        """Take ``write`` back from ``batch``, not taken yet (its caller was cancelled)."""
        batch.writes.remove(write)
        if not batch.writes and self._filling is batch:
            self._filling = None

    def reads(self) -> None:
        """Make the connection wait ``busy_timeout`` again, before statements outside
        a write transaction (the broker's reads): the writes leave it at 0, since
        :func:`begin` waits for the write lock itself and a statement inside a
        transaction begun so waits for no lock. Runs on the database thread, holding
        the connection; a statement only after a write."""
        if self._busy_off:
            with map_sqlite_exceptions(self._path):
                self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._busy_off = False

    def _writes(self) -> None:
        """Turn the busy handler off for the writes (see :meth:`reads`)."""
        if not self._busy_off:
            with map_sqlite_exceptions(self._path):
                self._db.execute("PRAGMA busy_timeout=0")
            self._busy_off = True

    def _synchronous(self, writes: list[_Write[Any]]) -> None:
        """Set the connection's ``synchronous`` for a transaction of ``writes``
        (outside any transaction; a statement only when it changes)."""
        if not self._fsync_durable:
            return
        full = any(write.durable for write in writes)
        if full != self._full:
            with map_sqlite_exceptions(self._path):
                self._db.execute(f"PRAGMA synchronous={'FULL' if full else 'NORMAL'}")
            self._full = full

    def _mind_room(self) -> None:
        """Checkpoint early while the filesystem is short of room (see ``LOW_ROOM``);
        at most once every ``ROOM_CHECK_EVERY`` seconds, outside any transaction."""
        now = time.monotonic()
        if now - self._room_checked < ROOM_CHECK_EVERY:
            return
        self._room_checked = now
        try:
            found = os.statvfs(self._directory)
        except OSError:  # ":memory:", a URI: no directory to look at
            return
        low = found.f_bavail * found.f_frsize < LOW_ROOM
        if low != self._low_room:
            pages = ROOMY_AUTOCHECKPOINT if low else _DEFAULT_AUTOCHECKPOINT
            try:
                self._db.execute(f"PRAGMA wal_autocheckpoint={pages}")
            except sqlite3.Error:
                return  # a setting, not the batch's writes: the next look tries again
            self._low_room = low

    def _commit(self, batch: list[_Write[Any]]) -> None:
        started = time.perf_counter()
        try:
            self._checkpoints_on()
            self._mind_room()
            self._writes()
            self._synchronous(batch)
            if len(batch) > 1:
                try:
                    with map_sqlite_exceptions(self._path):
                        values = _together(self._db, batch)
                except Exception as error:  # BEGIN or COMMIT failed: so did every write
                    make_room_if_full(self._db, error)
                    for write in batch:
                        write.fail(error)
                    return
                if values is not None:
                    for write, value in zip(batch, values, strict=True):
                        write.succeed(value)
                    return
            for write in batch:
                if len(batch) > 1:  # one alone was set for above
                    self._synchronous([write])
                _alone(self._db, write, self._path)
        except BaseException as error:
            for write in batch:
                if not write.settled:
                    write.fail(error)
        finally:
            if any(write.durable for write in batch):  # what _quiet goes by
                self._durable_took = time.perf_counter() - started
