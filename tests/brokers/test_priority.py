"""Job priorities beyond the conformance checks: the field, the producers that
set it, and SQLite's schema and claim plan (the claim order itself is checked on
every broker by guild.testing's priority_* checks)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

import guild
from guild import Priority
from guild.brokers.sqlite import SqliteBroker

from ._old_schemas import build


class TestField:
    """``Job.priority``: a level, given as a member, its int or its name."""

    @pytest.mark.parametrize(
        ("given", "level"),
        [
            (Priority.HIGH, Priority.HIGH),
            (1, Priority.HIGH),
            (0, Priority.NORMAL),
            (-1, Priority.LOW),
            ("low", Priority.LOW),
            ("HIGH", Priority.HIGH),
            (" normal ", Priority.NORMAL),
        ],
    )
    def test_accepted(self, given: object, level: Priority) -> None:
        job = guild.Job(queue="q", priority=given)  # type: ignore[arg-type]
        assert job.priority is level

    def test_default_is_normal(self) -> None:
        assert guild.Job(queue="q").priority is Priority.NORMAL

    def test_levels_highest_first(self) -> None:
        assert [int(p) for p in sorted(Priority, reverse=True)] == [1, 0, -1]

    @pytest.mark.parametrize("given", [2, -2, "urgent", "", 1.0, True, None])
    def test_refused_with_the_levels_named(self, given: object) -> None:
        with pytest.raises(ValueError, match=r"priority must be one of high \(1\), normal \(0\)"):
            guild.Job(queue="q", priority=given)  # type: ignore[arg-type]


async def _claim_order(path: Path) -> list[tuple[object, Priority]]:
    broker = await SqliteBroker.open(path)
    try:
        got = await broker.claim("q", consumer="c", limit=100, lease=60)
        return [(d.job.payload, d.job.priority) for d in got]
    finally:
        await broker.aclose()


class TestProducers:
    """``app.enqueue``, ``guild.Client`` and ``guild.AsyncClient`` take ``priority=``."""

    def test_client_and_app(self, tmp_path: Path) -> None:
        url = f"sqlite:{tmp_path / 'jobs.db'}"
        with guild.Client(url) as client:
            client.enqueue("q", "c-normal")
            client.enqueue("q", "c-high", priority="high")
            client.enqueue_many("q", ["c-low-1", "c-low-2"], priority=Priority.LOW)
            with pytest.raises(ValueError, match="priority must be one of"):
                client.enqueue("q", "bad", priority=7)

        app = guild.Guild()

        async def produce() -> None:
            await app.enqueue("q", "a-high", priority=Priority.HIGH, broker=url)
            await app.enqueue_many("q", ["a-low"], priority=-1, broker=url)
            async with guild.AsyncClient(url) as client:
                await client.enqueue("q", "ac-normal", priority=0)

        trio.run(produce)
        H, N, L = Priority.HIGH, Priority.NORMAL, Priority.LOW
        assert trio.run(_claim_order, tmp_path / "jobs.db") == [
            ("c-high", H),
            ("a-high", H),
            ("c-normal", N),
            ("ac-normal", N),
            ("c-low-1", L),
            ("c-low-2", L),
            ("a-low", L),
        ]


class TestSqlite:
    """Version 8 adds the column and the claim index; a claim stays an index search."""

    def test_old_file_migrates_to_normal_priority(self, tmp_path: Path) -> None:
        path = tmp_path / "old.db"
        build(path, 7, jobs_per_status=2)

        async def migrate_and_claim() -> list[tuple[object, Priority]]:
            broker = await SqliteBroker.open(path, migrate=True)
            await broker.enqueue([guild.Job(queue="q0", payload="new-high", priority="high")])
            got = await broker.claim("q0", consumer="c", limit=100, lease=60)
            await broker.aclose()
            return [(d.job.payload, d.job.priority) for d in got]

        assert trio.run(migrate_and_claim) == [
            ("new-high", Priority.HIGH),
            ({"n": 0}, Priority.NORMAL),
            ({"n": 1}, Priority.NORMAL),
        ]
        db = sqlite3.connect(path)
        indexes = {row[1] for row in db.execute("PRAGMA index_list(jobs)")}
        db.close()
        # Version 9 replaced the claim index by one over the ready rows only.
        assert "jobs_ready" in indexes
        assert not indexes & {"jobs_claim", "jobs_claim_priority"}

    def test_claim_is_an_index_search(self, tmp_path: Path) -> None:
        path = tmp_path / "plan.db"
        statements: list[str] = []

        async def claim_traced() -> None:
            broker = await SqliteBroker.open(path)
            try:
                await broker.enqueue([guild.Job(queue="q", priority=p) for p in [*Priority] * 50])
                broker._db.set_trace_callback(statements.append)
                await broker.claim("q", consumer="c", limit=10, lease=60)
                broker._db.set_trace_callback(None)
            finally:
                await broker.aclose()

        trio.run(claim_traced)
        (claim,) = [s for s in statements if s.startswith("UPDATE jobs SET status = 'in_flight'")]
        db = sqlite3.connect(path)
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + claim)]
        db.close()
        assert any(
            # (Covering or not, by the SQLite version: the row is read for the update.)
            "INDEX jobs_ready (queue=? AND priority=? AND ready_at<?)" in step
            for step in plan
        ), plan
        assert not any("TEMP B-TREE" in step for step in plan), plan
