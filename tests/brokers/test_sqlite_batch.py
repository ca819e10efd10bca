"""Group commit in the SQLite broker (``_sqlite_batch.WriteBatcher``): writes that
wait for the connection together share one transaction, yet each one succeeds,
fails or is cancelled exactly as it would alone; and ``start`` and ``ack``, one
statement per 256 jobs, keep their per-job answers. A real SQLite file throughout.

The tests hold the connection's limiter themselves while queueing writes, so
that those writes are sure to wait together and be taken as one batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

import guild
from guild import BrokerUnavailable, Delivery
from guild._codec import encode_result
from guild.brokers import _sqlite_batch
from guild.brokers._sqlite_batch import WriteBatcher
from guild.brokers._sqlite_lane import Lane
from guild.brokers.sqlite import SqliteBroker
from tests.brokers.conftest import DB_FILE


@pytest.fixture
def lane() -> Iterator[Lane]:
    """The connection's thread, as the broker has one."""
    thread = Lane("test-batch")
    yield thread
    thread.close()


@pytest.fixture
def limiter() -> trio.CapacityLimiter:
    """The connection's limiter, which a test holds to make writes queue together."""
    return trio.CapacityLimiter(1)


@pytest.fixture
def batcher(db: sqlite3.Connection, lane: Lane, limiter: trio.CapacityLimiter) -> WriteBatcher:
    return WriteBatcher(db, DB_FILE, limiter, lane=lane)


def _rows(path: Path) -> list[int]:
    """The committed rows, read through a connection of its own."""
    other = sqlite3.connect(path)
    try:
        return [n for (n,) in other.execute("SELECT n FROM t ORDER BY n")]
    finally:
        other.close()


def _insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def fn(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (n) VALUES (?)", (n,))
        return int(db.execute("SELECT count(*) FROM t").fetchone()[0])

    return fn


def _insert_then_fail(n: int) -> Callable[[sqlite3.Connection], int]:
    def fn(db: sqlite3.Connection) -> int:
        db.execute("INSERT INTO t (n) VALUES (?)", (n,))
        raise ValueError(f"write {n} fails")

    return fn


async def _write_in(scope: trio.CancelScope, batcher: WriteBatcher, n: int) -> None:
    """Write row ``n`` inside ``scope``, which the test cancels."""
    with scope:
        await batcher.write(_insert(n))


async def _queue_behind(
    limiter: trio.CapacityLimiter, writes: list[Callable[[], object]]
) -> list[object]:
    """Start ``writes`` while the test holds ``limiter``, then let them run: one batch."""
    outcomes: list[object] = [None] * len(writes)

    async def one(i: int) -> None:
        try:
            outcomes[i] = await writes[i]()  # type: ignore[misc]
        except Exception as error:
            outcomes[i] = error

    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        for i in range(len(writes)):
            # One at a time, so that they queue in this order.
            nursery.start_soon(one, i)
            await trio.testing.wait_all_tasks_blocked()
        limiter.release()
    return outcomes


async def test_writes_queued_together_all_commit_with_their_own_values(
    db: sqlite3.Connection, batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    outcomes = await _queue_behind(
        limiter,
        [
            lambda: batcher.write(_insert(1)),
            lambda: batcher.write(_insert(2)),
            lambda: batcher.write(_insert(3)),
        ],
    )
    # One transaction, in the order queued: each write saw those before it.
    assert outcomes == [1, 2, 3]
    assert _rows(tmp_path / DB_FILE) == [1, 2, 3]
    assert not db.in_transaction


async def test_a_failing_write_fails_alone_and_the_others_commit(
    db: sqlite3.Connection, batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    outcomes = await _queue_behind(
        limiter,
        [
            lambda: batcher.write(_insert(1)),
            lambda: batcher.write(_insert_then_fail(2)),
            lambda: batcher.write(_insert(3)),
        ],
    )
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], ValueError)
    assert str(outcomes[1]) == "write 2 fails"
    # Run again alone after the shared transaction rolled back: 3 sees 1, not 2.
    assert outcomes[2] == 2
    assert _rows(tmp_path / DB_FILE) == [1, 3]
    assert not db.in_transaction


async def test_a_sqlite_error_becomes_broker_unavailable_for_its_write_only(
    batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    outcomes = await _queue_behind(
        limiter,
        [
            lambda: batcher.write(_insert(1)),
            lambda: batcher.write(_insert(1)),  # the primary key is taken
        ],
    )
    assert outcomes[0] == 1
    assert isinstance(outcomes[1], BrokerUnavailable)
    assert isinstance(outcomes[1].__cause__, sqlite3.IntegrityError)
    assert _rows(tmp_path / DB_FILE) == [1]


async def test_a_write_cancelled_while_queued_never_runs(
    batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        nursery.start_soon(_write_in, scope, batcher, 7)
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        limiter.release()
        assert await batcher.write(_insert(8)) == 1
    assert scope.cancelled_caught
    assert _rows(tmp_path / DB_FILE) == [8]


async def test_a_batch_whose_first_caller_is_cancelled_is_led_by_another(
    batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    # The first caller of a batch waits for the connection for all of it: cancelled
    # before it got it, it takes its own write back, and the others still commit.
    scope = trio.CancelScope()
    results: dict[int, int] = {}

    async def follower(n: int) -> None:
        results[n] = await batcher.write(_insert(n))

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await limiter.acquire()
            nursery.start_soon(_write_in, scope, batcher, 7)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(follower, 1)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(follower, 2)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()
            await trio.testing.wait_all_tasks_blocked()
            limiter.release()
    assert scope.cancelled_caught
    # One transaction, in the order queued: the second saw the first.
    assert results == {1: 1, 2: 2}
    assert _rows(tmp_path / DB_FILE) == [1, 2]


async def test_a_write_taken_by_another_caller_is_reported_done_despite_a_cancel(
    batcher: WriteBatcher, limiter: trio.CapacityLimiter, tmp_path: Path
) -> None:
    entered = trio.Event()
    release = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def slow(db: sqlite3.Connection) -> int:
        # Runs in the thread: hold the batch open until the test has cancelled.
        token.run_sync_soon(entered.set)
        trio.from_thread.run(release.wait, trio_token=token)
        db.execute("INSERT INTO t (n) VALUES (1)")
        return 1

    results: dict[str, object] = {}

    async def owner() -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            results["second"] = await batcher.write(_insert(2))
        results["cancelled_caught"] = scope.cancelled_caught

    async def first() -> None:
        results["first"] = await batcher.write(slow)

    scopes: list[trio.CancelScope] = []
    async with trio.open_nursery() as nursery:
        await limiter.acquire()
        nursery.start_soon(first)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(owner)
        await trio.testing.wait_all_tasks_blocked()
        limiter.release()
        await entered.wait()  # the first caller took both writes, and runs them
        scopes[0].cancel()
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    # The second write was committed with the first: its caller gets its value.
    assert results == {"first": 1, "second": 2, "cancelled_caught": False}
    assert _rows(tmp_path / DB_FILE) == [1, 2]


# --- set-based start and ack: more jobs than one statement takes (256) -----------


async def test_start_and_ack_of_600_jobs_in_one_call(tmp_path: Path) -> None:
    broker = await SqliteBroker.open(tmp_path / "jobs.db")
    try:
        await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(600)])
        claimed = await broker.claim("q", consumer="c", limit=600, lease=60, start=0)
        assert len(claimed) == 600
        # A delivery given twice is started once, and comes back twice.
        started = await broker.start([*claimed, claimed[0]])
        assert len(started) == 601
        assert {d.job.attempt for d in started} == {1}
        assert [d.job.id for d in started] == [*(d.job.id for d in claimed), claimed[0].job.id]
        again = await broker.start(claimed[:3])  # started already: counted once
        assert [d.job.attempt for d in again] == [1, 1, 1]
        # One acked twice in the call: its first result stands, and it counts once.
        await broker.ack([(d, encode_result(d.job.payload)) for d in started])
        stats = await broker.stats(["q"])
        assert (stats["q"].done, stats["q"].in_flight, stats["q"].ready) == (600, 0, 0)
        result = await broker.get_result(claimed[599].job.id)
        assert result is not None and result.value == claimed[599].job.payload
    finally:
        await broker.aclose()


async def test_a_lost_lease_is_neither_started_nor_acked_twice(tmp_path: Path) -> None:
    broker = await SqliteBroker.open(tmp_path / "jobs.db")
    try:
        await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(3)])
        claimed = await broker.claim("q", consumer="c", limit=3, lease=60, start=0)
        wrong = [
            Delivery(
                job=d.job,
                receipt=d.receipt + "x",
                consumer=d.consumer,
                lease_expires=d.lease_expires,
            )
            for d in claimed
        ]
        assert await broker.start(wrong) == []
        started = await broker.start(claimed[:2])
        assert [d.job.id for d in started] == [d.job.id for d in claimed[:2]]
        await broker.ack([(started[0], encode_result("first"))])
        await broker.ack([(started[0], encode_result("again"))])
        result = await broker.get_result(started[0].job.id)
        assert result is not None and result.value == "first"
        assert (await broker.stats(["q"]))["q"].done == 1
    finally:
        await broker.aclose()


def _modes_at_commit(statements: list[str]) -> list[tuple[bool, str]]:
    """For each transaction traced: whether it inserted jobs, and the
    ``synchronous`` the connection was last set to when it committed."""
    mode, inserts, found = "as opened", False, []
    for sql in statements:
        if sql.startswith("PRAGMA synchronous="):
            mode = sql.removeprefix("PRAGMA synchronous=")
        elif sql == "BEGIN IMMEDIATE":
            inserts = False
        elif sql == "COMMIT":
            found.append((inserts, mode))
        inserts = inserts or sql.startswith("INSERT INTO jobs")
    return found


@pytest.mark.parametrize(
    ("url_option", "expected"),
    [
        # The default fsyncs the enqueues alone: a claim or an ack commits at NORMAL.
        ("", ["FULL", "NORMAL", "NORMAL", "FULL"]),
        ("?synchronous=FULL", ["as opened"] * 4),
        ("?synchronous=NORMAL", ["as opened"] * 4),
    ],
)
async def test_enqueue_commits_are_fsynced_by_default(
    tmp_path: Path, url_option: str, expected: list[str]
) -> None:
    async with guild.brokers.open_broker(f"sqlite:{tmp_path / 'f.db'}{url_option}") as broker:
        assert isinstance(broker, SqliteBroker)
        statements: list[str] = []
        broker._db.set_trace_callback(statements.append)
        await broker.enqueue([guild.Job(queue="q")])
        (held,) = await broker.claim("q", consumer="c", limit=1, lease=60)
        await broker.ack([(held, encode_result(None))])
        await broker.enqueue([guild.Job(queue="q")])
        broker._db.set_trace_callback(None)
        (level,) = broker._db.execute("PRAGMA synchronous").fetchone()
    found = _modes_at_commit(statements)
    # enqueue, claim, ack, enqueue
    assert [inserts for inserts, _ in found] == [True, False, False, True]
    assert [mode for _, mode in found] == expected
    # SQLite's own numbers: NORMAL is 1, FULL is 2.
    assert level == {"": 2, "?synchronous=FULL": 2, "?synchronous=NORMAL": 1}[url_option]


async def test_writes_turn_the_busy_handler_off_once_and_a_read_turns_it_on(
    tmp_path: Path,
) -> None:
    # A write waits for the lock itself (begin's naps); toggling busy_timeout around
    # each one cost two statements an enqueue. Reads still wait busy_timeout.
    async with guild.brokers.open_broker(f"sqlite:{tmp_path / 'b.db'}") as broker:
        assert isinstance(broker, SqliteBroker)
        statements: list[str] = []
        broker._db.set_trace_callback(statements.append)
        for _ in range(3):
            await broker.enqueue([guild.Job(queue="q")])
        await broker.stats()
        await broker.enqueue([guild.Job(queue="q")])
        broker._db.set_trace_callback(None)
    kept = [s for s in statements if s.startswith(("PRAGMA busy_timeout", "BEGIN"))]
    assert kept == [
        "PRAGMA busy_timeout=0",
        "BEGIN IMMEDIATE",
        "BEGIN IMMEDIATE",
        "BEGIN IMMEDIATE",
        "PRAGMA busy_timeout=30000",
        "BEGIN",  # stats: one read transaction
        "PRAGMA busy_timeout=0",
        "BEGIN IMMEDIATE",
    ]


async def test_a_bad_synchronous_setting_is_named(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ENQUEUE, FULL or NORMAL, got 'OFF'"):
        await SqliteBroker.open(tmp_path / "x.db", synchronous="OFF")
    with pytest.raises(guild.UnknownBrokerURL, match=r"synchronous=ENQUEUE\|FULL\|NORMAL"):
        async with guild.brokers.open_broker(f"sqlite:{tmp_path / 'x.db'}?synchronous=OFF"):
            pass


def test_a_writer_waits_for_another_process_lock_in_short_naps(tmp_path: Path) -> None:
    path = tmp_path / "naps.db"
    ours = sqlite3.connect(path, isolation_level=None)
    ours.execute("PRAGMA journal_mode=WAL")
    ours.execute("PRAGMA busy_timeout=30000")
    theirs = sqlite3.connect(path, isolation_level=None)
    theirs.execute("BEGIN IMMEDIATE")
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == 6:
            theirs.execute("COMMIT")

    _sqlite_batch.begin(ours, nap=nap)
    ours.execute("COMMIT")
    # Doubling from 0.1 ms, never above 1 ms (SQLite's own handler: 1, 2, 5 … 100 ms).
    assert naps == [0.0001, 0.0002, 0.0004, 0.0008, 0.001, 0.001]
    assert ours.execute("PRAGMA busy_timeout").fetchone() == (30000,)

    theirs.execute("BEGIN IMMEDIATE")
    ticks = iter(range(100))
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _sqlite_batch.begin(ours, patience=5, nap=lambda _: None, clock=lambda: next(ticks))
    assert not ours.in_transaction
    assert ours.execute("PRAGMA busy_timeout").fetchone() == (30000,)
    theirs.execute("ROLLBACK")
    ours.close()
    theirs.close()


@pytest.mark.parametrize(("durable", "fewest", "most"), [(True, 2, 4), (False, 6, 24)])
async def test_callers_woken_together_join_one_batch_when_they_enqueue(
    batcher: WriteBatcher,
    db: sqlite3.Connection,
    monkeypatch: pytest.MonkeyPatch,
    durable: bool,
    fewest: int,
    most: int,
) -> None:
    # 8 callers write 3 times each, all at once. Enqueues (durable writes) woken
    # together by one commit are let to gather into the next: after the first
    # commit (1 write) and the second (the rest of the first round), each round is
    # about one commit. A worker's writes get no such passes (they would only delay
    # its claims and acks): each round splits in two, the first to come alone.
    sizes: list[int] = []
    commit = batcher._commit

    def counted(writes: list[_sqlite_batch._Write[object]]) -> None:
        sizes.append(len(writes))
        commit(writes)

    monkeypatch.setattr(batcher, "_commit", counted)

    async def caller(i: int) -> None:
        for k in range(3):
            await batcher.write(_insert(i * 10 + k), durable=durable)

    async with trio.open_nursery() as nursery:
        for i in range(8):
            nursery.start_soon(caller, i)
    assert sum(sizes) == 24
    assert fewest <= len(sizes) <= most, sizes
    assert sorted(n for (n,) in db.execute("SELECT n FROM t")) == sorted(
        i * 10 + k for i in range(8) for k in range(3)
    )
