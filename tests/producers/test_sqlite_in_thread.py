"""guild.Client on SQLite enqueues in the calling thread, on a connection of its own.

Checked on the real file, read with a separate ``sqlite3`` connection (not the
broker), and with a ``guild run`` in another process.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

import guild
from guild.brokers import _sqlite_enqueue

from .apps import at_once, guild_run_process, race_one_key

THREADS = 8
PER_THREAD = 60


def _rows(path: Path, sql: str, *params: object) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.close()


def test_threads_at_once_lose_and_duplicate_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "jobs.db"
    returned: list[list[str]] = [[] for _ in range(THREADS)]
    stored_in: dict[str, int] = {}  # job id -> the thread whose transaction stored it
    real_store = _sqlite_enqueue.store

    def store(db: sqlite3.Connection, jobs: Any, *args: Any) -> list[guild.Job]:
        for job in jobs:
            stored_in[job.id] = threading.get_ident()
        return real_store(db, jobs, *args)

    monkeypatch.setattr(_sqlite_enqueue, "store", store)
    produced_in: dict[str, int] = {}

    def produce(index: int) -> None:
        for n in range(PER_THREAD):
            job_id = client.enqueue("load", [index, n]).id
            returned[index].append(job_id)
            produced_in[job_id] = threading.get_ident()

    with guild.Client(f"sqlite:///{path}") as client:
        at_once(THREADS, produce)
    # Each job was stored in the thread that enqueued it, not the client's.
    assert stored_in == produced_in
    stored = _rows(path, "SELECT id, payload, status FROM jobs WHERE queue = 'load'")
    every = [job_id for ids in returned for job_id in ids]
    assert len(every) == THREADS * PER_THREAD
    assert sorted(row[0] for row in stored) == sorted(every)
    payloads = {tuple(json.loads(str(row[1]))) for row in stored}
    assert payloads == {(i, n) for i in range(THREADS) for n in range(PER_THREAD)}
    assert {row[2] for row in stored} == {"ready"}


def test_fields_are_stored_as_the_broker_stores_them(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with guild.Client(f"sqlite:///{path}") as client:
        before = time.time()
        urgent = client.enqueue("q", 1, priority="high", max_attempts=3, trace_id="t-1")
        later = client.enqueue("q", 2, delay=600)
        assert client.status(later) is guild.JobStatus.DELAYED
    (row,) = _rows(
        path, "SELECT priority, max_attempts, trace_id FROM jobs WHERE id = ?", urgent.id
    )
    assert row == (int(guild.Priority.HIGH), 3, "t-1")
    ((ready_at,),) = _rows(path, "SELECT ready_at FROM jobs WHERE id = ?", later.id)
    assert isinstance(ready_at, float) and ready_at >= before + 600


def test_a_key_is_held_across_threads_and_the_broker_path(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    url = f"sqlite:///{path}"
    with guild.Client(url) as client:
        got = race_one_key(client, THREADS, "once")

    async def through_the_broker() -> guild.Job:
        async with guild.open_broker(url) as broker:
            (job,) = await broker.enqueue([guild.Job(queue="keyed", payload=99, key="once")])
            return job

    again = trio.run(through_the_broker)
    assert len(set(got)) == 1 and again.id == got[0]
    assert _rows(path, "SELECT count(*) FROM jobs WHERE queue = 'keyed'") == [(1,)]


def test_a_canary_share_routes_the_job_to_its_lane(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with guild.Client(f"sqlite:///{path}") as client:
        client.enqueue("q", 0)  # the file exists with its schema
        db = sqlite3.connect(path)
        db.execute("INSERT INTO rollouts (queue, share, version, state) VALUES ('q', 1.0, 1, '{}')")
        db.commit()
        db.close()
        job = client.enqueue("q", 1)
    ((queue,),) = _rows(path, "SELECT queue FROM jobs WHERE id = ?", job.id)
    assert queue != "q" and queue.startswith("q")
    assert job.queue == queue


def test_a_worker_in_another_process_runs_the_job(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/jobs.db"
    with guild.Client(url) as client:
        client.enqueue("double", 0)  # the schema made before the worker opens the file
        with guild_run_process(url):
            jobs = [client.enqueue("double", n) for n in range(1, 6)]
            results = [client.result(job, wait=60) for job in jobs]
    assert [r.value if r is not None else None for r in results] == [2, 4, 6, 8, 10]


def test_a_locked_database_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    with guild.Client(f"sqlite:///{path}") as client:
        client.enqueue("q", 0)
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        done: list[guild.Job] = []
        waiting = threading.Thread(target=lambda: done.append(client.enqueue("q", 1)))
        waiting.start()
        waiting.join(timeout=0.3)
        # Still waiting for the write lock (the broker's patience is 30 s).
        assert waiting.is_alive() and not done
        holder.execute("COMMIT")
        holder.close()
        waiting.join(timeout=30)
    assert len(done) == 1
    assert _rows(path, "SELECT count(*) FROM jobs WHERE id = ?", done[0].id) == [(1,)]


def test_a_lock_held_past_patience_is_a_broker_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from guild.brokers import _sqlite_batch

    path = tmp_path / "jobs.db"
    with guild.Client(f"sqlite:///{path}") as client:
        client.enqueue("q", 0)
        real_begin = _sqlite_batch.begin
        monkeypatch.setattr(
            _sqlite_batch, "begin", lambda db, **kw: real_begin(db, **{**kw, "patience": 0.0})
        )
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(guild.BrokerUnavailable, match="locked"):
                client.enqueue("q", 1)
        finally:
            holder.execute("COMMIT")
            holder.close()
        # The connection is usable again once the lock is free.
        client.enqueue("q", 2)
    assert _rows(path, "SELECT payload FROM jobs ORDER BY enqueued_at") == [("0",), ("2",)]


def test_calls_after_close_and_bad_input_store_nothing(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    client = guild.Client(f"sqlite:///{path}")
    client.enqueue("q", 0)
    with pytest.raises(guild.PayloadEncodeError):
        client.enqueue("q", {1j})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delay"):
        client.enqueue("q", 1, delay=-1)
    client.close()
    with pytest.raises(guild.BrokerClosed):
        client.enqueue("q", 2)
    assert _rows(path, "SELECT count(*) FROM jobs") == [(1,)]
