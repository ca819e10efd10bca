"""A lone enqueue on an idle run commits on the Trio thread (``_sqlite_batch``,
"Alone"), and only then: never while another task could run, never after a slow
commit, never waiting for another connection's write lock, never with SQLite's
checkpoint. A real SQLite file throughout; which thread ran a statement is what
SQLite's trace callback, called in that thread, records.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import guild
from guild._codec import encode_result
from guild.brokers import _sqlite_batch
from guild.brokers._sqlite_batch import WriteBatcher
from guild.brokers._sqlite_lane import Lane
from guild.brokers.sqlite import SqliteBroker
from tests.brokers.conftest import DB_FILE


@pytest.fixture(autouse=True)
def patient(monkeypatch: pytest.MonkeyPatch) -> None:
    """Commits count as fast whatever the test machine's disk (the test that times
    them sets its own bound); no deadline in these tests is nearer than that."""
    monkeypatch.setattr(_sqlite_batch, "HERE_MAX", 2.0)


@pytest.fixture
def batcher(db: sqlite3.Connection) -> Iterator[WriteBatcher]:
    lane = Lane("test-here")
    yield WriteBatcher(db, DB_FILE, trio.CapacityLimiter(1), lane=lane)
    lane.close()


def _insert(n: int, threads: list[int], pause: float = 0.0) -> Callable[[sqlite3.Connection], None]:
    def fn(db: sqlite3.Connection) -> None:
        threads.append(threading.get_ident())
        db.execute("INSERT INTO t (n) VALUES (?)", (n,))
        time.sleep(pause)

    return fn


async def test_a_lone_enqueue_on_an_idle_run_commits_on_the_trio_thread(tmp_path: Path) -> None:
    async with guild.open_broker(f"sqlite:{tmp_path / 'q.db'}") as broker:
        assert isinstance(broker, SqliteBroker)
        here = threading.get_ident()
        ran: list[tuple[bool, str]] = []
        broker._db.set_trace_callback(lambda s: ran.append((threading.get_ident() == here, s)))
        for size in (1, 1, 1, 17, 16):
            await broker.enqueue([guild.Job(queue="q") for _ in range(size)])
        broker._db.set_trace_callback(None)
    other = sqlite3.connect(tmp_path / "q.db")
    assert other.execute("SELECT count(*) FROM jobs").fetchone() == (36,)
    other.close()
    # One transaction an enqueue (executemany traces each row's INSERT).
    inserts = [on_trio for on_trio, s in ran if s == "BEGIN IMMEDIATE"]
    # The first commit is not timed yet: it goes to the database thread; so does
    # an enqueue of more than 16 jobs (milliseconds of inserts).
    assert inserts == [False, True, True, False, True]
    # At the default (ENQUEUE) the Trio thread's commits are fsynced too (the
    # connection stays at FULL), and SQLite's checkpoint is off while they run.
    pragmas = [(on_trio, s) for on_trio, s in ran if s.startswith(("PRAGMA", "BEGIN"))]
    assert pragmas == [
        (False, "PRAGMA busy_timeout=0"),
        (False, "PRAGMA synchronous=FULL"),
        (False, "BEGIN IMMEDIATE"),
        (True, "PRAGMA wal_autocheckpoint=0"),
        (True, "BEGIN IMMEDIATE"),
        (True, "BEGIN IMMEDIATE"),
        (False, "PRAGMA wal_autocheckpoint=1000"),  # SQLite's, for the next commit
        (False, "BEGIN IMMEDIATE"),
        (True, "PRAGMA wal_autocheckpoint=0"),
        (True, "BEGIN IMMEDIATE"),
    ]


async def test_with_another_task_runnable_the_enqueue_goes_to_the_database_thread(
    batcher: WriteBatcher,
) -> None:
    threads: list[int] = []
    await batcher.write(_insert(0, threads), durable=True, here=True)  # timed: the next may stay
    await batcher.write(_insert(1, threads), durable=True, here=True)

    async def other() -> None:
        await trio.lowlevel.checkpoint()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)  # runnable when the write is made
        await batcher.write(_insert(2, threads), durable=True, here=True)
    # A write that is not an enqueue (a worker's claim or ack) never stays.
    await batcher.write(_insert(3, threads))
    here = threading.get_ident()
    assert [t == here for t in threads] == [False, True, False, False]


async def test_a_slow_commit_sends_the_next_ones_to_the_database_thread(
    batcher: WriteBatcher, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sqlite_batch, "HERE_MAX", 0.2)
    threads: list[int] = []
    for n, pause in enumerate([0.0, 0.0, 0.25, 0.0, 0.0, 0.25, 0.0]):
        await batcher.write(_insert(n, threads, pause), durable=True, here=True)
    here = threading.get_ident()
    # The third took longer than HERE_MAX on the Trio thread: the fourth goes to
    # the database thread, whose quick commit lets the fifth stay; the sixth was
    # slow on the Trio thread again, the seventh goes.
    assert [t == here for t in threads] == [False, True, True, False, True, True, False]


async def test_a_write_lock_held_elsewhere_is_waited_for_on_the_database_thread(
    tmp_path: Path, db: sqlite3.Connection, batcher: WriteBatcher
) -> None:
    threads: list[int] = []
    await batcher.write(_insert(0, threads), durable=True, here=True)
    begun: list[bool] = []
    db.set_trace_callback(
        lambda s: begun.append(threading.get_ident() == here) if s.startswith("BEGIN") else None
    )
    here = threading.get_ident()
    theirs = sqlite3.connect(tmp_path / DB_FILE, isolation_level=None)
    theirs.execute("BEGIN IMMEDIATE")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: batcher.write(_insert(1, threads), durable=True, here=True))
            # The write tried the lock once on the Trio thread, then went to wait
            # for it in naps on the database thread, where nothing of Trio waits.
            await trio.testing.wait_all_tasks_blocked()
            assert begun[0] is True
            assert [n for (n,) in theirs.execute("SELECT n FROM t")] == [0]
            theirs.execute("COMMIT")
    finally:
        theirs.close()
    db.set_trace_callback(None)
    assert [t == here for t in threads] == [False, False]
    assert begun[0] is True and not any(begun[1:])
    assert [n for (n,) in db.execute("SELECT n FROM t ORDER BY n")] == [0, 1]


async def test_the_log_is_checkpointed_on_the_database_thread_only(tmp_path: Path) -> None:
    path = tmp_path / "log.db"
    async with guild.open_broker(f"sqlite:{path}?synchronous=NORMAL") as broker:
        assert isinstance(broker, SqliteBroker)
        here = threading.get_ident()
        runs: list[bool] = []  # the thread of each enqueue's INSERT: True for Trio's
        broker._db.set_trace_callback(
            lambda s: (
                runs.append(threading.get_ident() == here)
                if s.startswith("INSERT INTO jobs")
                else None
            )
        )
        for _ in range(1500):
            await broker.enqueue([guild.Job(queue="q")])
        broker._db.set_trace_callback(None)
        wal = os.path.getsize(f"{path}-wal")
    stays = "".join("t" if on_trio else "d" for on_trio in runs).split("d")
    assert max(len(run) for run in stays) == _sqlite_batch.HERE_RUN
    assert sum(runs) > 1400
    # 1,500 enqueues write about 5,000 pages of log. SQLite's checkpoint, once the
    # log passes 1,000 pages, lets it start over; never run, the log would hold
    # them all (20 MB). The database thread's commits run it: at most HERE_RUN
    # commits late.
    page = 4096 + 24
    assert wal <= (1000 + 4 * _sqlite_batch.HERE_RUN + 32) * page, wal


async def test_after_a_write_fails_on_the_trio_thread_the_next_goes_to_the_database_thread(
    batcher: WriteBatcher, db: sqlite3.Connection
) -> None:
    threads: list[int] = []

    def failing(db: sqlite3.Connection) -> None:
        threads.append(threading.get_ident())
        db.execute("INSERT INTO t (n) VALUES (1)")
        raise ValueError("no")

    await batcher.write(_insert(0, threads), durable=True, here=True)
    with pytest.raises(ValueError, match="no"):
        await batcher.write(failing, durable=True, here=True)
    await batcher.write(_insert(2, threads), durable=True, here=True)
    await batcher.write(_insert(3, threads), durable=True, here=True)
    here = threading.get_ident()
    assert [t == here for t in threads] == [False, True, False, True]
    assert [n for (n,) in db.execute("SELECT n FROM t ORDER BY n")] == [0, 2, 3]


async def test_a_write_cancelled_before_it_runs_never_runs_on_the_trio_thread_either(
    batcher: WriteBatcher, db: sqlite3.Connection
) -> None:
    threads: list[int] = []
    await batcher.write(_insert(0, threads), durable=True, here=True)
    with trio.CancelScope() as scope:
        scope.cancel()
        await batcher.write(_insert(1, threads), durable=True, here=True)
    assert scope.cancelled_caught
    await batcher.write(_insert(2, threads), durable=True, here=True)
    here = threading.get_ident()
    assert [t == here for t in threads] == [False, True]
    assert [n for (n,) in db.execute("SELECT n FROM t ORDER BY n")] == [0, 2]


async def test_at_the_default_an_enqueue_on_the_trio_thread_after_an_ack_is_fsynced(
    tmp_path: Path,
) -> None:
    # ENQUEUE fsyncs the commits holding an enqueue only: the claim and the ack
    # commit at NORMAL, and the enqueue after them switches back to FULL, on
    # whichever thread it commits.
    async with guild.open_broker(f"sqlite:{tmp_path / 'f.db'}") as broker:
        assert isinstance(broker, SqliteBroker)
        here = threading.get_ident()
        ran: list[tuple[bool, str]] = []
        broker._db.set_trace_callback(lambda s: ran.append((threading.get_ident() == here, s)))
        await broker.enqueue([guild.Job(queue="q")])
        (held,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        await broker.ack([(held, encode_result(None))])
        await broker.enqueue([guild.Job(queue="q")])
        broker._db.set_trace_callback(None)
    # The last enqueue, all on the Trio thread: FULL again before its commit.
    assert [s.split(" (")[0] for on_trio, s in ran if on_trio] == [
        "PRAGMA synchronous=FULL",
        "PRAGMA wal_autocheckpoint=0",
        "BEGIN IMMEDIATE",
        "SELECT queue, share FROM rollouts WHERE share > 0",
        "INSERT INTO jobs",
        "COMMIT",
    ]
