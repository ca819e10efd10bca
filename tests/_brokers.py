"""Real brokers of each kind for the suites that run on all of them (broker
conformance, rollout, workflows): the memory broker, a SQLite file, a private
redis-server and a private Redis Cluster.

A conftest imports ``redis_server`` and ``redis_cluster`` to get its own
session-wide servers, and opens brokers with :func:`broker_of`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from guild.brokers import Broker, MemoryBroker
from guild.brokers.redis import RedisBroker
from guild.brokers.sqlite import SqliteBroker
from tests._redis_server import (
    RedisCluster,
    RedisServer,
    running_redis_cluster,
    running_redis_server,
)

BROKER_KINDS = ["memory", "sqlite", "redis", "redis-cluster"]
_numbers = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with running_redis_cluster() as cluster:
        yield cluster


async def open_broker_of(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Broker:
    """A new broker of ``kind`` (one of :data:`BROKER_KINDS`), sharing nothing with
    the brokers opened before it."""
    number = next(_numbers)
    if kind == "memory":
        return MemoryBroker()
    if kind == "sqlite":
        return await SqliteBroker.open(tmp_path / f"broker-{number}.db")
    # A fresh key prefix per broker: one server, no test sees another's keys.
    server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
    return await RedisBroker.open(server.url, prefix=f"t{number}")


@asynccontextmanager
async def broker_of(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Broker]:
    """:func:`open_broker_of`, closed on leaving."""
    broker = await open_broker_of(kind, request, tmp_path)
    try:
        yield broker
    finally:
        await broker.aclose()
