"""Caches expire on time, stay bounded, and @cached runs one call per key at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import pytest
import trio
import trio.testing

from guild.cache import Cache, MemoryCache, RedisCache, cached
from tests._redis_server import RedisServer, running_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@asynccontextmanager
async def _memory() -> AsyncIterator[Cache]:
    yield MemoryCache()


@pytest.fixture(params=["memory", "redis"])
def open_cache(
    request: pytest.FixtureRequest, redis_server: RedisServer
) -> Callable[[], AbstractAsyncContextManager[Cache]]:
    if request.param == "memory":
        return _memory
    prefix = f"test:{request.node.name}:"
    return lambda: RedisCache.open(redis_server.url, prefix=prefix)


class TestBothCaches:
    """Every cache keeps values until their TTL and forgets on delete."""

    async def test_set_get_expire_delete(
        self, open_cache: Callable[[], AbstractAsyncContextManager[Cache]]
    ) -> None:
        with trio.fail_after(10):
            async with open_cache() as cache:
                assert await cache.get("k") is None
                await cache.set("k", {"a": [1, 2]}, ttl=0.3)
                assert await cache.get("k") == {"a": [1, 2]}
                await trio.sleep(0.4)
                assert await cache.get("k") is None
                await cache.set("k", 1, ttl=60)
                await cache.delete("k")
                assert await cache.get("k") is None
                with pytest.raises(ValueError, match="ttl"):
                    await cache.set("k", 1, ttl=0)


class TestMemoryCache:
    """The memory cache is LRU-bounded and follows the MockClock."""

    async def test_lru_bound(self, autojump_clock: trio.testing.MockClock) -> None:
        cache = MemoryCache(max_entries=2)
        await cache.set("a", 1, ttl=10)
        await cache.set("b", 2, ttl=10)
        await cache.get("a")
        await cache.set("c", 3, ttl=10)
        assert (await cache.get("a"), await cache.get("b"), await cache.get("c")) == (1, None, 3)
        assert len(cache) == 2

    async def test_ttl_in_virtual_time(self, autojump_clock: trio.testing.MockClock) -> None:
        cache = MemoryCache()
        await cache.set("a", 1, ttl=3600)
        await trio.sleep(3599)
        assert await cache.get("a") == 1
        await trio.sleep(2)
        assert await cache.get("a") is None


class TestCached:
    """@cached memoises, coalesces concurrent calls, and never caches errors."""

    async def test_single_flight(self, autojump_clock: trio.testing.MockClock) -> None:
        calls = 0

        @cached(MemoryCache(), ttl=60)
        async def slow_square(n: int) -> int:
            nonlocal calls
            calls += 1
            await trio.sleep(1)
            return n * n

        results: list[int] = []

        async def call() -> None:
            results.append(await slow_square(7))

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(call)
        assert results == [49] * 5
        assert calls == 1
        assert await slow_square(7) == 49 and calls == 1
        assert await slow_square(8) == 64 and calls == 2

    async def test_errors_reach_every_waiter_and_are_not_cached(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        calls = 0

        @cached(MemoryCache(), ttl=60, key=lambda n: f"k{n}")
        async def flaky(n: int) -> int:
            nonlocal calls
            calls += 1
            await trio.sleep(1)
            if calls == 1:
                raise ConnectionError("down")
            return n

        errors: list[BaseException] = []

        async def call() -> None:
            try:
                await flaky(1)
            except ConnectionError as error:
                errors.append(error)

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert len(errors) == 3 and calls == 1
        assert await flaky(1) == 1 and calls == 2
