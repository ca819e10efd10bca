"""SQLite deletions in short batches (guild.brokers._sqlite_purge): a batch stops at
its row limit or its time budget, deletes a step at a time, and the write lock is
free between batches. No wall time is asserted: time is a counter given as the
clock, and "the lock is free" is a write that does not wait (busy timeout 0)."""

from __future__ import annotations

import itertools
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from guild import Job, JobStatus, Retention
from guild.brokers import _sqlite_purge, encode_result
from guild.brokers._sqlite_purge import BATCH, Swept
from guild.brokers.sqlite import SqliteBroker


class _Source:
    """A kind of row to delete: ``left`` of them, and the sizes it was asked for."""

    def __init__(self, left: int) -> None:
        self.left = left
        self.asked: list[int] = []

    def __call__(self, n: int) -> int:
        self.asked.append(n)
        taken = min(n, self.left)
        self.left -= taken
        return taken


def _ticks(step: float) -> Callable[[], float]:
    counter = itertools.count()
    return lambda: next(counter) * step


@given(
    sizes=st.lists(st.integers(0, 60), min_size=1, max_size=4),
    limit=st.integers(1, 80),
    step=st.integers(1, 30),
    tick=st.sampled_from([0.0, 0.001, 0.01, 1.0]),
)
def test_a_batch_keeps_to_its_rows_steps_and_time(
    sizes: list[int], limit: int, step: int, tick: float
) -> None:
    sources = [_Source(n) for n in sizes]
    swept = _sqlite_purge._steps(sources, limit, step, 0.02, _ticks(tick))
    taken = [n - s.left for n, s in zip(sizes, sources, strict=True)]
    assert swept.rows == sum(taken) <= limit
    assert all(n <= step for s in sources for n in s.asked)
    if tick >= 0.02 and sum(sizes) > 0 and sources[0].asked:
        # The clock ran past the budget after the first step that took a row.
        assert swept.rows <= step
    if not swept.more:
        assert all(s.left == 0 for s in sources)
    if swept.rows == limit:
        assert swept.more


def test_time_cuts_a_batch_short_after_a_step() -> None:
    # Clock readings 0 (start), then 1 s: past the budget once a step has run.
    source = _Source(1000)
    swept = _sqlite_purge._steps([source], 250, 50, 0.02, _ticks(1.0))
    assert swept == Swept(50, more=True)
    assert source.asked == [50]


def test_a_batch_that_runs_dry_says_nothing_more_is_due() -> None:
    first, second = _Source(30), _Source(7)
    assert _sqlite_purge._steps([first, second], 250, 20, 0.02, _ticks(0.0)) == Swept(
        37, more=False
    )
    assert (first.asked, second.asked) == ([20, 20], [20])


def _done_rows(path: Path, count: int, finished: float) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO jobs (id, queue, payload, max_attempts, enqueued_at, trace_id, status,"
        " ready_at, finished_at, result_expires) VALUES (?, 'q', 'null', 1, ?, 't', 'done',"
        " ?, ?, ?)",
        [(f"J{i:06d}", finished, finished, finished, finished) for i in range(count)],
    )
    db.execute("COMMIT")
    db.close()


@pytest.fixture
def broker_file(tmp_path: Path) -> Path:
    path = tmp_path / "purge.db"

    async def create() -> None:
        await (await SqliteBroker.open(path)).aclose()

    trio.run(create)
    return path


def test_expired_deletes_a_step_at_a_time_up_to_its_limit(broker_file: Path) -> None:
    _done_rows(broker_file, 60, time.time() - 100)
    db = sqlite3.connect(broker_file, isolation_level=None)
    deletes: list[str] = []
    db.set_trace_callback(lambda sql: deletes.append(sql) if sql.startswith("DELETE") else None)
    left = []
    for _ in range(4):
        db.execute("BEGIN IMMEDIATE")
        swept = _sqlite_purge.expired(db, time.time(), Retention(), limit=25, step=10)
        db.execute("COMMIT")
        left.append((swept, db.execute("SELECT count(*) FROM jobs").fetchone()[0]))
    db.close()
    assert left == [
        (Swept(25, more=True), 35),
        (Swept(25, more=True), 10),
        (Swept(10, more=False), 0),
        (Swept(0, more=False), 0),
    ]
    # 25 rows in steps of 10, 10, 5 (jobs): three statements each, then the keys.
    assert sum("FROM jobs" in sql for sql in deletes) == 3 + 3 + 2 + 1


async def test_another_writer_gets_the_lock_between_batches(
    broker_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    count = 3 * BATCH + 10
    broker = await SqliteBroker.open(broker_file)
    try:
        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(count)])
        held = await broker.claim("q", consumer="c", limit=count, lease=60)
        await broker.ack([(d, encode_result(None)) for d in held])
        assert len(jobs) == len(held) == count
        other = sqlite3.connect(broker_file, isolation_level=None, timeout=0)
        left: list[int] = []

        async def pause(took: float) -> None:
            # Busy timeout 0: this raises "database is locked" if the purge still
            # held the write lock.
            other.execute("BEGIN IMMEDIATE")
            other.execute(
                "INSERT INTO ledger_counts VALUES ('test', 'between', 'batches', 1)"
                " ON CONFLICT DO UPDATE SET value = value + 1"
            )
            left.append(other.execute("SELECT count(*) FROM jobs").fetchone()[0])
            other.execute("COMMIT")
            await trio.lowlevel.checkpoint()

        monkeypatch.setattr(_sqlite_purge, "pause", pause)
        assert await broker.purge("q", [JobStatus.DONE]) == count
        (between,) = other.execute("SELECT value FROM ledger_counts").fetchone()
        other.close()
    finally:
        await broker.aclose()
    assert len(left) == between >= 3
    gone = [before - after for before, after in itertools.pairwise([count, *left])]
    assert all(0 < n <= BATCH for n in gone), gone
    # What the last batch (after which nothing is due, so no pause) deleted.
    assert 0 < left[-1] <= BATCH
