"""The SQLite broker's lean write path (schema version 9): partial indexes keep an
enqueue commit small and finished rows out of what claims, stats and purges read.
Measured in WAL frames and query plans, which are deterministic; never in time."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import trio

import guild
from guild import JobStatus, Retention
from guild.brokers import encode_result
from guild.brokers.sqlite import SqliteBroker


def _wal_frames(path: Path) -> int:
    # A WAL file: a 32-byte header, then frames of a 24-byte header and a page.
    size = os.path.getsize(f"{path}-wal")
    return 0 if size == 0 else (size - 32) // (24 + 4096)


async def test_a_one_job_enqueue_commit_writes_under_four_pages(tmp_path: Path) -> None:
    path = tmp_path / "lean.db"
    broker = await SqliteBroker.open(path)
    try:
        await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(2000)])
        broker._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert _wal_frames(path) == 0
        for i in range(200):
            await broker.enqueue([guild.Job(queue="q", payload=i)])
        frames = _wal_frames(path)
    finally:
        await broker.aclose()
    # The row, its id and its claim entry, 3.5 pages a commit; with the four
    # full indexes of version 8 it was 5.0.
    assert frames < 4 * 200, frames / 200


async def test_no_call_of_the_job_path_scans_the_table(tmp_path: Path) -> None:
    path = tmp_path / "plans.db"
    broker = await SqliteBroker.open(
        path, retention=Retention(results=0.001, done=0.001, dead=0.001)
    )
    statements: list[str] = []
    try:
        await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(20)])
        held = await broker.claim("q", consumer="c", limit=5, lease=60)
        await broker.ack([(d, encode_result(None)) for d in held])
        await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(20)])
        broker._db.set_trace_callback(statements.append)
        held = await broker.claim("q", consumer="c", limit=10, lease=60)
        held = await broker.start(held)
        await broker.ack([(d, encode_result(None)) for d in held[:5]])
        await broker.dead(held[5], error="boom")
        await broker.stats()
        await broker.list_dead("q")
        await broker.purge_expired()
        await broker.purge("q", [JobStatus.DONE, JobStatus.CANCELLED, JobStatus.DEAD])
        await broker.purge("q", [JobStatus.READY], older_than=0)
        broker._db.set_trace_callback(None)
    finally:
        await broker.aclose()
    db = sqlite3.connect(path)
    scans: dict[str, list[str]] = {}
    for sql in statements:
        if " jobs " not in sql or sql.startswith(("PRAGMA", "BEGIN", "COMMIT")):
            continue
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql)]
        if "SCAN jobs" in plan:
            scans[sql] = plan
    db.close()
    assert len(statements) > 10
    assert scans == {}


def test_finished_rows_are_in_no_claim_or_lease_index(tmp_path: Path) -> None:
    path = tmp_path / "small.db"

    async def finish_some() -> None:
        async with guild.brokers.open_broker(f"sqlite:{path}") as broker:
            await broker.enqueue([guild.Job(queue="q", payload=i) for i in range(30)])
            held = await broker.claim("q", consumer="c", limit=20, lease=60)
            await broker.ack([(d, encode_result(None)) for d in held[:15]])

    trio.run(finish_some)
    db = sqlite3.connect(path)
    # An index's entries, counted from its b-tree (dbstat would need a build option).
    entries = {
        name: db.execute(f"SELECT count(*) FROM jobs INDEXED BY {name} WHERE {where}").fetchone()[0]
        for name, where in (
            ("jobs_ready", "status = 'ready'"),
            ("jobs_held", "status = 'in_flight'"),
            ("jobs_expires", "status IN ('done', 'cancelled')"),
        )
    }
    rows = db.execute("SELECT count(*) FROM jobs").fetchone()[0]
    db.close()
    assert rows == 30
    assert entries == {"jobs_ready": 10, "jobs_held": 5, "jobs_expires": 15}
