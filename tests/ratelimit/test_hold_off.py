"""hold_off: a server's Retry-After pauses a limiter for every waiter, then the rate resumes."""

from __future__ import annotations

import math
from collections.abc import Iterator

import coredis
import pytest
import trio
import trio.testing

import guild
from guild.ratelimit import RateLimiter, RedisRateLimiter
from tests._redis_server import RedisServer, running_redis_server


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


class TestLocalHoldOff:
    async def test_every_waiter_waits_out_the_hold(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(2, period=1.0, burst=5)
        await limiter.hold_off(10.0)
        admitted: list[float] = []

        async def one() -> None:
            async with limiter:
                admitted.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(one)
        # No burst after a hold: one at 10 s, then one every 0.5 s.
        assert admitted == [10.0, 10.5, 11.0, 11.5]

    async def test_hold_reaches_a_head_already_asleep(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(1, period=1.0)
        await limiter.acquire()
        limiter.release()
        admitted: list[float] = []

        async def one() -> None:
            async with limiter:
                admitted.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one)  # asleep until 1.0 for the rate
            await trio.testing.wait_all_tasks_blocked()
            await limiter.hold_off(5.0)
        assert admitted == [5.0]

    async def test_a_shorter_hold_changes_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(1, period=1.0)
        await limiter.hold_off(8.0)
        await limiter.hold_off(2.0)
        await limiter.acquire()
        assert trio.current_time() == 8.0
        limiter.release()

    async def test_bad_seconds_and_no_rate(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(1)
        for bad in (-1.0, math.inf, math.nan, True, "1"):
            with pytest.raises(ValueError, match="hold off"):
                await limiter.hold_off(bad)  # type: ignore[arg-type]
        with pytest.raises(guild.RateLimitError, match="without a rate"):
            await RateLimiter(None, concurrency=1).hold_off(1.0)


class TestRedisHoldOff:
    async def test_a_hold_in_one_process_holds_the_other(self, redis_server: RedisServer) -> None:
        with trio.fail_after(10):
            async with (
                RedisRateLimiter.open(redis_server.url, "held", rate=100, burst=5) as a,
                RedisRateLimiter.open(redis_server.url, "held", rate=100, burst=5) as b,
            ):
                await a.hold_off(0.5)
                start = trio.current_time()
                assert not await b.try_acquire()
                async with b:
                    waited = trio.current_time() - start
        assert waited >= 0.5 - 0.02

    async def test_open_on_a_client_the_caller_owns(self, redis_server: RedisServer) -> None:
        with trio.fail_after(10):
            client = coredis.Redis.from_url(redis_server.url)
            async with client:
                async with RedisRateLimiter.open_on(client, "owned", rate=1000, concurrency=1) as x:
                    async with x:
                        assert x.borrowed_tokens == 1
                    await x.hold_off(0.3)
                    start = trio.current_time()
                    async with x:
                        assert trio.current_time() - start >= 0.3 - 0.02
                    with pytest.raises(guild.RateLimitError, match="needs the limiter's URL"):
                        x.acquire_nowait()
                assert await client.ping()
