"""The SQLite broker's files hold every job's payload: only their owner may read them."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

import guild
from guild.brokers.sqlite import SqliteBroker


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
