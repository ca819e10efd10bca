"""The SQLite broker's files: only their owner may read them, and files of every
earlier schema version are refused, or (``migrate=True``) migrate and keep their jobs.
``guild migrate``, with its backup and checks, is tested in test_sqlite_migrate.py."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

import guild
from guild.brokers._sqlite_schema import MIGRATIONS
from guild.brokers.sqlite import SqliteBroker
from guild.workflows import WorkflowRecord

LATEST = max(version for version, _ in MIGRATIONS)


@pytest.fixture
def open_umask() -> Iterator[None]:
    """The usual umask (022), under which files are world-readable unless made otherwise."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.usefixtures("open_umask")
async def test_a_new_database_and_its_wal_and_shm_are_0600(tmp_path: Path) -> None:
    path = tmp_path / "jobs.db"
    broker = await SqliteBroker.open(path)
    try:
        await broker.enqueue([guild.Job(queue="q", payload={"secret": "s3cret"})])
        files = {p.name: _mode(p) for p in tmp_path.iterdir()}
    finally:
        await broker.aclose()
    assert files == {"jobs.db": 0o600, "jobs.db-wal": 0o600, "jobs.db-shm": 0o600}


@pytest.mark.usefixtures("open_umask")
async def test_an_existing_database_keeps_the_mode_its_owner_gave_it(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    path.touch(mode=0o640)
    os.chmod(path, 0o640)
    broker = await SqliteBroker.open(path)
    await broker.aclose()
    assert _mode(path) == 0o640


# --- old files: refused, or migrated in place on request, keeping their jobs ----


def _old_database(path: Path, version: int) -> None:
    """A database as a guild of schema ``version`` left it, holding one ready job."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        for number, statements in MIGRATIONS:
            if number <= version:
                for statement in statements:
                    db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        db.execute(
            "INSERT INTO jobs (id, queue, payload, attempt, max_attempts, enqueued_at,"
            " trace_id, status, ready_at) VALUES ('old-job', 'q', '{\"n\": 1}', 0, 3, 1.0,"
            " 'trace', 'ready', 1.0)"
        )
    finally:
        db.close()


@pytest.mark.parametrize("version", range(1, LATEST))
async def test_an_old_database_migrates_and_keeps_its_jobs(tmp_path: Path, version: int) -> None:
    path = tmp_path / "old.db"
    _old_database(path, version)
    with pytest.raises(guild.SchemaMismatch, match="guild migrate --broker sqlite://"):
        await SqliteBroker.open(path)
    broker = await SqliteBroker.open(path, migrate=True)
    try:
        (delivery,) = await broker.claim("q", consumer="c", limit=1, lease=30)
        assert (delivery.job.id, delivery.job.payload) == ("old-job", {"n": 1})
        record = WorkflowRecord(
            id="wf",
            name="w",
            status="running",
            spec="{}",
            state="{}",
            version=0,
            created_at=1.0,
            updated_at=1.0,
        )
        assert await broker.create_workflow(record)
        assert await broker.get_workflow("wf") == record
    finally:
        await broker.aclose()
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    finally:
        db.close()
    # Opening a migrated file again changes nothing.
    broker = await SqliteBroker.open(path)
    try:
        assert await broker.list_workflows() == [record]
    finally:
        await broker.aclose()


async def test_many_connections_opening_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    # Switching a brand-new file to WAL needs it to itself, and SQLite says
    # "database is locked" at once rather than waiting: before the broker waited
    # that out, about one round in ten lost an opener (a client and a worker
    # starting together on a new file).
    failures: list[BaseException] = []
    for round_ in range(40):
        url = f"sqlite:///{tmp_path}/new-{round_}.db"

        async def open_one(url: str = url) -> None:
            try:
                async with guild.open_broker(url) as broker:
                    await broker.stats()
            except guild.GuildError as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(open_one)
    assert failures == []
