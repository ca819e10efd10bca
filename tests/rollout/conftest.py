"""Brokers for the rollout tests: memory, a real SQLite file, a real redis-server."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from guild.brokers import MemoryBroker
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
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisCluster]:
    with running_redis_cluster() as cluster:
        yield cluster


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def make_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    kind = request.param

    @asynccontextmanager
    async def make() -> AsyncIterator[Any]:
        broker: Any
        if kind == "memory":
            broker = MemoryBroker()
        elif kind == "sqlite":
            broker = await SqliteBroker.open(tmp_path / f"rollout-{next(_prefixes)}.db")
        else:
            name = "redis_server" if kind == "redis" else "redis_cluster"
            server = request.getfixturevalue(name)
            broker = await RedisBroker.open(server.url, prefix=f"r{next(_prefixes)}")
        try:
            yield broker
        finally:
            await broker.aclose()

    return make
