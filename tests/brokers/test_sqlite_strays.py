"""SQLite rows that no claim would ever take are dead-lettered with a reason that
names the field, by the claims of their queue that find nothing to take (a slice
of the table each); every good job still runs, and a deep backlog's first claim
does not wait for the look.

The rows are written with plain ``sqlite3``, as a hand edit or another program
would leave them; the conformance check ``bad_stored_entries`` covers rows that
claim does take but cannot decode.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

import guild
from guild import Job, JobStatus
from guild.brokers import _sqlite_strays
from guild.brokers.sqlite import SqliteBroker
from tests._poll import until

_COLUMNS = (
    "id, queue, payload, attempt, max_attempts, enqueued_at, trace_id, status, ready_at,"
    " priority, lease_expires, receipt"
)

# (id, status, ready_at, priority, lease_expires, the reason its dead letter gives)
_STRAYS: list[tuple[str, object, object, object, object, str]] = [
    (
        "status-bogus",
        "bogus",
        0.0,
        0,
        None,
        "field 'status' is 'bogus', none of ready, in_flight, done, dead, cancelled",
    ),
    (
        "status-bytes",
        b"\xff",
        0.0,
        0,
        None,
        "field 'status' is X'FF', none of ready, in_flight, done, dead, cancelled",
    ),
    ("priority-text", "ready", 0.0, "high", None, "field 'priority' is 'high', none of 1, 0, -1"),
    ("priority-7", "ready", 0.0, 7, None, "field 'priority' is 7, none of 1, 0, -1"),
    ("ready-at-text", "ready", "soon", 0, None, "field 'ready_at' is 'soon', not a number"),
    ("lease-text", "in_flight", 0.0, 0, "soon", "field 'lease_expires' is 'soon', not a number"),
    ("lease-null", "in_flight", 0.0, 0, None, "field 'lease_expires' is NULL, not a number"),
]


def _insert(path: Path, queue: str, rows: list[tuple[str, object, object, object, object]]) -> None:
    with sqlite3.connect(path) as db:
        db.executemany(
            f"INSERT INTO jobs ({_COLUMNS}) VALUES (?, ?, '1', 0, 3, 1.0, 't', ?, ?, ?, ?, 'r')",
            [
                (id_, queue, status, ready_at, prio, lease)
                for id_, status, ready_at, prio, lease in rows
            ],
        )
    db.close()


async def test_rows_no_claim_would_take_are_dead_lettered_with_their_reason(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db"
    with trio.fail_after(30):
        broker = await SqliteBroker.open(path)
        try:
            good = await broker.enqueue([Job(queue="q", payload=n) for n in range(3)])
            _insert(path, "q", [stray[:5] for stray in _STRAYS])
            # A stray of another queue waits for a claim on its own queue.
            _insert(path, "other", [("other-bogus", "bogus", 0.0, 0, None)])
            claimed = await broker.claim("q", consumer="c", limit=10, lease=30)
            assert sorted(d.job.id for d in claimed) == sorted(j.id for j in good)
            # A claim that took jobs did not look: one that finds nothing does.
            assert await broker.get_dead(_STRAYS[0][0]) is None
            assert await broker.claim("q", consumer="c", limit=10, lease=30) == []
            for job_id, *_, reason in _STRAYS:
                letter = await broker.get_dead(job_id)
                assert letter is not None, job_id
                assert letter.error == f"rejected: job {job_id}: {reason}"
                result = await broker.get_result(job_id)
                assert result is not None and result.status is JobStatus.DEAD
            listed = {letter.job.id for letter in await broker.list_dead("q")}
            assert listed == {stray[0] for stray in _STRAYS}
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.ready, stats.in_flight, stats.dead) == (0, 3, len(_STRAYS))
            assert await broker.get_dead("other-bogus") is None
            assert await broker.claim("other", consumer="c", limit=1, lease=30) == []
            assert await broker.get_dead("other-bogus") is not None
        finally:
            await broker.aclose()


async def test_a_worker_runs_every_good_job_past_the_strays(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    ran: list[int] = []
    app = guild.Guild("strays")

    @app.worker("q", concurrency=2)
    async def work(job: Job) -> None:
        ran.append(job.payload)

    with trio.fail_after(30):
        async with guild.open_broker(f"sqlite:///{path}") as direct:
            jobs = await direct.enqueue([Job(queue="q", payload=n) for n in range(10)])
            _insert(path, "q", [stray[:5] for stray in _STRAYS])
            async with app.open(f"sqlite:///{path}"):
                for job in jobs:
                    result = await direct.get_result(job.id, wait=20)
                    assert result is not None and result.status is JobStatus.DONE
                # Its claims found nothing once the good jobs were taken: the strays
                # are dead-lettered by one of those.
                await until(lambda: _all_dead(direct))
            stats = (await direct.stats(["q"]))["q"]
            assert (stats.done, stats.dead, stats.ready, stats.in_flight) == (10, 7, 0, 0)
    assert sorted(ran) == list(range(10))


async def _all_dead(broker: guild.Broker) -> bool:
    return (await broker.stats(["q"]))["q"].dead == len(_STRAYS)


async def test_the_look_goes_a_slice_of_the_table_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each claim that finds nothing looks through STRAY_SLICE rowids; a stray
    past the first slices is dead-lettered by the claim whose slice holds it."""
    monkeypatch.setattr(_sqlite_strays, "STRAY_SLICE", 10)
    path = tmp_path / "jobs.db"
    with trio.fail_after(30):
        broker = await SqliteBroker.open(path)
        try:
            # Rowids 1-25: good jobs of another queue; 26: a stray of 'q'; then
            # 27-35 good jobs of the other queue.
            await broker.enqueue([Job(queue="other", payload=n) for n in range(25)])
            _insert(path, "q", [("late-stray", "bogus", 0.0, 0, None)])
            await broker.enqueue([Job(queue="other", payload=n) for n in range(9)])
            # Slices (0, 10], (10, 20], (20, 30]: the third holds rowid 26.
            for _ in range(2):
                assert await broker.claim("q", consumer="c", limit=1, lease=30) == []
                assert await broker.get_dead("late-stray") is None
            assert await broker.claim("q", consumer="c", limit=1, lease=30) == []
            assert await broker.get_dead("late-stray") is not None
        finally:
            await broker.aclose()
