"""Broker URLs for the producer tests: a real SQLite file and a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._redis_server import running_redis_server


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A broker URL no other test uses: a new SQLite file, or a redis-server of its own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/jobs.db"
        return
    # appendonly: a Redis that keeps nothing makes every command warn on stderr.
    with running_redis_server(appendonly=True) as server:
        yield server.url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/jobs.db"
