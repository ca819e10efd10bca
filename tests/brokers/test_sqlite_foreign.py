"""A SQLite file another program made is refused, and left byte for byte as it was.

Before, guild switched such a file to WAL (a lasting change of its journal mode),
then failed with SQLite's own words ("table jobs already exists", "no such
column: queue"), which did not say the file was the wrong one.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path

import pytest

import guild
from guild.brokers._sqlite_migrate import migrate
from guild.brokers.sqlite import SqliteBroker
from tests.cli.conftest import run_guild


def _foreign(path: Path, tables: int = 1) -> str:
    """A database of some other program, with a ``jobs`` table of its own; its digest."""
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (x INTEGER)")
    db.execute("INSERT INTO jobs VALUES (7)")
    for n in range(1, tables):
        db.execute(f"CREATE TABLE t{n} (y)")
    db.commit()
    db.close()
    return _digest(path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _unchanged(path: Path, digest: str) -> None:
    assert _digest(path) == digest
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no -wal, -shm
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("delete",)
        assert db.execute("SELECT x FROM jobs").fetchall() == [(7,)]
    finally:
        db.close()


async def test_opening_it_is_refused_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    digest = _foreign(path)
    with pytest.raises(guild.BrokerUnavailable) as caught:
        await SqliteBroker.open(path)
    assert str(caught.value) == (
        f"sqlite {path}: not a guild database (it holds jobs, which guild did not make,"
        " and no guild schema version): name another file"
    )
    _unchanged(path, digest)


async def test_the_message_names_a_few_of_many_tables(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    _foreign(path, tables=9)
    with pytest.raises(guild.BrokerUnavailable, match=r"it holds jobs, t1, t2, t3, t4, \.\.\., "):
        await SqliteBroker.open(path)


def test_migrate_refuses_it_and_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "theirs.db"
    digest = _foreign(path)
    for dry_run in (True, False):
        with pytest.raises(guild.BrokerUnavailable, match="not a guild database"):
            migrate(path, dry_run=dry_run)
    _unchanged(path, digest)


@pytest.mark.parametrize(
    "command",
    [
        ("stats",),
        ("enqueue", "q", "1"),
        ("migrate",),
        ("run", "tests.cli.apps:quick"),
    ],
    ids=lambda args: args[0],
)
def test_every_command_says_so_in_one_line(tmp_path: Path, command: tuple[str, ...]) -> None:
    path = tmp_path / "theirs.db"
    digest = _foreign(path)
    done = run_guild(*command, "--broker", f"sqlite:{path}", cwd=tmp_path)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [
        f"guild: error: sqlite {path}: not a guild database (it holds jobs, which guild"
        " did not make, and no guild schema version): name another file"
    ]
    _unchanged(path, digest)


async def test_an_empty_file_is_still_made_a_guild_database(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    broker = await SqliteBroker.open(path)
    try:
        await broker.enqueue([guild.Job(queue="q", payload=1)])
        assert (await broker.stats())["q"].ready == 1
    finally:
        await broker.aclose()
