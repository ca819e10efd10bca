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

    @asynccontextmanager
    async def memory() -> AsyncIterator[Broker]:
        broker = MemoryBroker()
        try:
            yield broker
        finally:
            await broker.aclose()

    @asynccontextmanager
    async def sqlite() -> AsyncIterator[Broker]:
        broker = await SqliteBroker.open(tmp_path / f"broker-{next(_prefixes)}.db")
        try:
            yield broker
        finally:
            await broker.aclose()

    @asynccontextmanager
    async def redis() -> AsyncIterator[Broker]:
        server: RedisServer = request.getfixturevalue("redis_server")
        broker = await RedisBroker.open(server.url, prefix=f"t{next(_prefixes)}")
        try:
            yield broker
        finally:
            await broker.aclose()

    @asynccontextmanager
    async def redis_cluster() -> AsyncIterator[Broker]:
        cluster: RedisCluster = request.getfixturevalue("redis_cluster")
        broker = await RedisBroker.open(cluster.url, prefix=f"t{next(_prefixes)}")
        try:
            yield broker
        finally:
            await broker.aclose()

    return {"memory": memory, "sqlite": sqlite, "redis": redis, "redis-cluster": redis_cluster}[
        kind
    ]
