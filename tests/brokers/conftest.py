"""Broker factories for the conformance suite: adding a broker is one entry here."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
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

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]
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
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBroker:
    kind = request.param

    async def open_one() -> Broker:
        if kind == "memory":
            return MemoryBroker()
        if kind == "sqlite":
            return await SqliteBroker.open(tmp_path / f"broker-{next(_prefixes)}.db")
        # A fresh key prefix per broker: one server, no test sees another's keys.
        server = request.getfixturevalue("redis_server" if kind == "redis" else "redis_cluster")
        return await RedisBroker.open(server.url, prefix=f"t{next(_prefixes)}")

    @asynccontextmanager
    async def make() -> AsyncIterator[Broker]:
        broker = await open_one()
        try:
            yield broker
        finally:
            await broker.aclose()

    return make
