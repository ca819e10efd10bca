"""Brokers for the workflow tests: the memory broker, a SQLite file, a private
redis-server and a private Redis Cluster, each real (see tests/conftest.py for
the clock rules)."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
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

_prefixes = itertools.count()


@pytest.fixture(scope="session")
def workflow_redis() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def workflow_redis_cluster() -> Iterator[RedisCluster]:
    with running_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    opened: Broker
    if request.param == "memory":
        opened = MemoryBroker()
    elif request.param == "sqlite":
        opened = await SqliteBroker.open(tmp_path / "guild.db")
    else:
        # A fresh key prefix per broker: one server, no test sees another's keys.
        name = "workflow_redis" if request.param == "redis" else "workflow_redis_cluster"
        server = request.getfixturevalue(name)
        opened = await RedisBroker.open(server.url, prefix=f"wf{next(_prefixes)}")
    try:
        yield opened
    finally:
        await opened.aclose()
