"""RedisRateLimiter: one limit shared by several clients, on a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import trio

import guild
from guild.ratelimit import RedisRateLimiter
from tests._redis_server import RedisServer, free_port, running_redis_server


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


class TestRedisRateLimiter:
    """Admissions across clients follow one GCRA schedule kept in Redis."""

    async def test_shared_burst_then_refusal(self, redis_server: RedisServer) -> None:
        with trio.fail_after(10):
            async with (
                RedisRateLimiter.open(redis_server.url, "api", rate=1, period=60, burst=3) as a,
                RedisRateLimiter.open(redis_server.url, "api", rate=1, period=60, burst=3) as b,
            ):
                results = [await a.try_acquire(), await b.try_acquire(), await a.try_acquire()]
                assert results == [True, True, True]
                assert not await b.try_acquire()
                assert not await a.try_acquire()

    async def test_acquire_waits_for_the_rate(self, redis_server: RedisServer) -> None:
        with trio.fail_after(10):
            async with RedisRateLimiter.open(redis_server.url, "fast", rate=20, burst=1) as limiter:
                admitted = 0
                start = trio.current_time()
                for _ in range(6):
                    async with limiter:
                        admitted += 1
                elapsed = trio.current_time() - start
        # Six admissions at 20/s need at least five intervals of 50 ms.
        assert admitted == 6
        assert elapsed >= 0.25 - 0.01

    async def test_names_are_independent(self, redis_server: RedisServer) -> None:
        with trio.fail_after(10):
            async with (
                RedisRateLimiter.open(redis_server.url, "one", rate=1, period=60) as one,
                RedisRateLimiter.open(redis_server.url, "two", rate=1, period=60) as two,
            ):
                assert await one.try_acquire()
                assert await two.try_acquire()
                assert not await one.try_acquire()

    async def test_unreachable_redis_is_a_typed_error(self) -> None:
        url = f"redis://127.0.0.1:{free_port()}/0"
        with trio.fail_after(30), pytest.raises(guild.BrokerUnavailable):
            async with RedisRateLimiter.open(url, "x", rate=1) as limiter:
                await limiter.try_acquire()
