"""Broker factories for the conformance suite: adding a broker is one entry in
``tests/_brokers.py``."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from guild.brokers import Broker
from tests._brokers import BROKER_KINDS, broker_of
from tests._brokers import redis_cluster as redis_cluster
from tests._brokers import redis_server as redis_server

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]

DB_FILE = "t.db"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A WAL-mode SQLite file ``tmp_path / DB_FILE`` with one table ``t (n)``,
    opened as the broker opens its connections (any thread, autocommit)."""
    connection = sqlite3.connect(tmp_path / DB_FILE, check_same_thread=False, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("CREATE TABLE t (n INTEGER PRIMARY KEY)")
    yield connection
    connection.close()


@pytest.fixture(params=BROKER_KINDS)
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBroker:
    kind = request.param
    return lambda: broker_of(kind, request, tmp_path)
