"""SQLite schema versions: a file of every old version (built from the DDL recorded
in tests/brokers/_old_schemas.py) migrates with a backup, keeps every job, and ends
with the schema a new file gets; the broker refuses old and newer files."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

import pytest

import guild
from guild.brokers import _sqlite_migrate
from guild.brokers._sqlite_migrate import CURRENT, FAULT_ENV, backup_path, describe, migrate
from guild.brokers.sqlite import SqliteBroker

from ._old_schemas import RECORDED, STATUSES, build, intact, jobs_of, schema_of, version_of

OLD_VERSIONS = range(1, CURRENT)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _backups(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.bak"))


# Written out: 2 queues x 4 statuses x 3 jobs, as _old_schemas.build makes them.
EXPECTED_JOBS = {(f"q{q}", status): 3 for q in range(2) for status in STATUSES}


def test_every_schema_version_has_its_ddl_recorded() -> None:
    # A schema change ships with its statements written into _old_schemas.py.
    assert RECORDED == CURRENT


async def test_a_new_database_gets_the_recorded_current_schema(tmp_path: Path) -> None:
    broker = await SqliteBroker.open(tmp_path / "new.db")
    await broker.aclose()
    build(tmp_path / "recorded.db", CURRENT, jobs_per_status=0)
    assert schema_of(tmp_path / "new.db") == schema_of(tmp_path / "recorded.db")


@pytest.mark.parametrize("version", OLD_VERSIONS)
async def test_an_old_file_migrates_with_a_backup_and_keeps_every_job(
    tmp_path: Path, version: int
) -> None:
    path = tmp_path / "old.db"
    build(path, version, jobs_per_status=3, queues=2)
    report = migrate(path)

    assert (report.found, report.target, report.applied) == (version, CURRENT, True)
    assert [step.version for step in report.pending] == list(range(version + 1, CURRENT + 1))
    assert version_of(path) == CURRENT
    assert jobs_of(path) == EXPECTED_JOBS
    build(tmp_path / "recorded.db", CURRENT, jobs_per_status=0)
    assert schema_of(path) == schema_of(tmp_path / "recorded.db")
    # The backup is the old file: its version, its jobs.
    (backup,) = _backups(tmp_path)
    assert report.backup == str(backup)
    assert backup.name.startswith(f"old.db.v{version}-")
    assert (version_of(backup), jobs_of(backup)) == (version, EXPECTED_JOBS)
    assert backup.stat().st_mode & 0o077 == 0

    async with guild.open_broker(f"sqlite:///{path}") as broker:
        (delivery,) = await broker.claim("q0", consumer="c", limit=1, lease=30)
        assert delivery.job.id.startswith("ready-0-")
        assert delivery.job.payload == {"n": int(delivery.job.id.rsplit("-", 1)[1])}
        # Idempotency keys survived: the key finds the job written before.
        (again,) = await broker.enqueue([guild.Job(queue="q1", payload={}, key="key-dead-1-2")])
        assert again.id == "dead-1-2"


async def test_open_refuses_an_old_file_and_leaves_it_alone(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    build(path, 2)
    before = _digest(path)
    with pytest.raises(guild.SchemaMismatch) as caught:
        await SqliteBroker.open(path)
    assert (caught.value.found, caught.value.supported) == (2, CURRENT)
    assert str(caught.value) == (
        f"the database {path} has schema version 2, older than version {CURRENT}, which"
        f" this guild needs: run `guild migrate --broker sqlite://{path}`"
    )
    assert version_of(path) == 2
    assert jobs_of(path) == {("q0", s): 1 for s in STATUSES}
    assert _digest(path) == before


async def test_open_and_migrate_refuse_a_newer_file(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    build(path, CURRENT)
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(f"PRAGMA user_version = {CURRENT + 1}")
    db.close()
    with pytest.raises(guild.SchemaMismatch, match=f"schema version {CURRENT + 1}, newer than"):
        await SqliteBroker.open(path)
    with pytest.raises(guild.SchemaMismatch, match=f"newer than version {CURRENT}"):
        migrate(path)
    assert version_of(path) == CURRENT + 1
    assert _backups(tmp_path) == []


def test_a_dry_run_lists_the_steps_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    build(path, 1)
    before = _digest(path)
    report = migrate(path, dry_run=True)
    assert [step.version for step in report.pending] == list(range(2, CURRENT + 1))
    assert report.pending[0].does == (
        "ALTER TABLE jobs ADD COLUMN started",
        "UPDATE jobs",
        "ALTER TABLE jobs ADD COLUMN interrupted",
    )
    assert (report.applied, report.backup) == (False, None)
    assert _digest(path) == before
    assert _backups(tmp_path) == []


def test_nothing_pending_takes_no_backup(tmp_path: Path) -> None:
    path = tmp_path / "current.db"
    build(path, CURRENT)
    report = migrate(path)
    assert (report.pending, report.applied, report.backup) == ((), False, None)
    assert _backups(tmp_path) == []


def test_a_failed_check_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    build(path, 3, jobs_per_status=3, queues=2)
    monkeypatch.setenv(FAULT_ENV, "verify")
    with pytest.raises(guild.MigrationFailed, match="rolled back, the file is as it was"):
        migrate(path)
    assert (version_of(path), jobs_of(path), intact(path)) == (3, EXPECTED_JOBS, True)
    (backup,) = _backups(tmp_path)
    assert version_of(backup) == 3


def test_a_failed_check_after_the_commit_restores_the_backup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "old.db"
    build(path, 2, jobs_per_status=3, queues=2)
    build(tmp_path / "as_built.db", 2, jobs_per_status=0)
    monkeypatch.setenv(FAULT_ENV, "after-commit")
    with pytest.raises(guild.MigrationFailed, match="restored it from the backup"):
        migrate(path)
    assert (version_of(path), jobs_of(path), intact(path)) == (2, EXPECTED_JOBS, True)
    assert schema_of(path) == schema_of(tmp_path / "as_built.db")


def test_a_missing_file_is_no_database(tmp_path: Path) -> None:
    with pytest.raises(guild.BrokerUnavailable, match="no database at"):
        migrate(tmp_path / "absent.db")
    assert list(tmp_path.iterdir()) == []


def test_describe_names_what_a_statement_does() -> None:
    assert describe("CREATE TABLE t (\n  a TEXT\n)") == "CREATE TABLE t"
    assert describe("CREATE INDEX i ON t (a) WHERE b = 1") == "CREATE INDEX i"
    assert describe("ALTER TABLE jobs ADD COLUMN x INTEGER NOT NULL") == (
        "ALTER TABLE jobs ADD COLUMN x"
    )
    assert describe("UPDATE jobs SET a = 1") == "UPDATE jobs"


def test_backup_names_are_timestamped_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "guild.db"
    at = dt.datetime(2026, 12, 1, 18, 5, 9, tzinfo=dt.UTC)
    first = backup_path(path, 2, at)
    assert first == tmp_path / "guild.db.v2-20261201T180509Z.bak"
    first.touch()
    assert backup_path(path, 2, at) == tmp_path / "guild.db.v2-20261201T180509Z-1.bak"


def test_the_census_counts_jobs_per_queue_and_status(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    build(path, 1, jobs_per_status=2, queues=3)
    db = sqlite3.connect(path)
    try:
        found = _sqlite_migrate.census(db)
    finally:
        db.close()
    assert found["rows"] == {"jobs": 24, "idempotency": 24, "queue_counts": 0}
    assert {k: v for k, v in found.items() if k != "rows"} == {
        f"jobs q{q}": dict.fromkeys(STATUSES, 2) for q in range(3)
    }
