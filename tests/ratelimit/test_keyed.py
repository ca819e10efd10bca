"""KeyedLimiters: lazily made, idle ones bounded; and worker limits shared on real Redis."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import cast

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import guild
from guild import Job, Limit
from guild.observability import WorkerStateChanged
from guild.ratelimit import KeyedLimiters, LimiterSettings
from tests._redis_server import RedisServer, running_redis_server


class TestIdleBound:
    async def test_a_million_keys_do_not_leak(self, autojump_clock: trio.testing.MockClock) -> None:
        limiters = KeyedLimiters(LimiterSettings(rate=None, concurrency=1), max_idle=3)
        for n in range(10_000):
            key = f"tenant-{n}"
            await limiters.acquire(key, n)
            limiters.release(key, n)
        assert len(limiters) == 3
        # The survivors are the three used last.
        assert all(limiters.limiter(f"tenant-{n}") is not None for n in (9_997, 9_998, 9_999))

    async def test_busy_limiters_are_never_forgotten(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiters = KeyedLimiters(LimiterSettings(rate=None, concurrency=1), max_idle=0)
        await limiters.acquire("held", "me")
        for n in range(10):
            await limiters.acquire(f"k{n}", n)
            limiters.release(f"k{n}", n)
        assert len(limiters) == 1 and limiters.limiter("held") is not None
        limiters.release("held", "me")
        assert len(limiters) == 0

    async def test_a_limiter_is_forgotten_only_once_recharged(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # 1 per 10 s: forgetting "a" right after its admission would let a new
        # limiter admit "a" again at once, breaking the rate.
        limiters = KeyedLimiters(LimiterSettings(rate=1, period=10.0), max_idle=0)
        await limiters.acquire("a", 1)
        limiters.release("a", 1)
        assert limiters.limiter("a") is not None
        start = trio.current_time()
        await limiters.acquire("a", 2)
        assert trio.current_time() - start == 10.0
        limiters.release("a", 2)
        await trio.sleep(10.0)
        await limiters.acquire("b", 3)
        limiters.release("b", 3)
        # Recharged by now: "a" goes; "b" was admitted just now and stays.
        assert limiters.limiter("a") is None and limiters.limiter("b") is not None

    async def test_max_idle_is_checked(self) -> None:
        with pytest.raises(ValueError, match="max_idle"):
            KeyedLimiters(LimiterSettings(rate=1), max_idle=-1)


class TestLimitValues:
    @pytest.mark.parametrize(
        ("text", "rate", "period"),
        [
            ("10/s", 10.0, 1.0),
            ("600/min", 600.0, 60.0),
            ("5/10s", 5.0, 10.0),
            ("0.5/s", 0.5, 1.0),
            ("3 / 2 hours", 3.0, 7200.0),
            ("100/ms", 100.0, 0.001),
            ("1/day", 1.0, 86400.0),
        ],
    )
    def test_rate_strings(self, text: str, rate: float, period: float) -> None:
        limit = Limit(rate=text)
        assert limit.rate is not None
        assert (limit.rate.rate, limit.rate.period) == (rate, period)

    @pytest.mark.parametrize("text", ["10", "10/", "ten/s", "10/fortnight", "-1/s", "0/s", "1/0s"])
    def test_bad_rate_strings(self, text: str) -> None:
        with pytest.raises(ValueError):
            Limit(rate=text)

    def test_a_limit_limits_something(self) -> None:
        with pytest.raises(ValueError, match="rate, a concurrency"):
            Limit(key=lambda job: "x")
        with pytest.raises(ValueError, match="burst needs a rate"):
            Limit(concurrency=2, burst=3)
        with pytest.raises(ValueError, match="concurrency"):
            Limit(concurrency=0)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


def _tenant(job: Job) -> str:
    payload = cast("dict[str, str]", job.payload)
    return payload["tenant"]


class TestSharedOnRedis:
    async def test_two_apps_on_one_redis_share_a_key_limit(self, redis_server: RedisServer) -> None:
        runs: list[tuple[str, str, float, float]] = []

        def make_app(name: str) -> guild.Guild:
            app = guild.Guild(name)

            # One job held at a time per app: each app takes part, neither hoards.
            @app.worker(
                "sync",
                concurrency=1,
                prefetch=0,
                limit=Limit(concurrency=1, key=_tenant),
            )
            async def sync(job: Job) -> None:
                start = trio.current_time()
                await trio.sleep(0.15)
                runs.append((name, _tenant(job), start, trio.current_time()))

            return app

        url = redis_server.url
        with trio.fail_after(30):
            async with make_app("a").open(url) as a, make_app("b").open(url):
                jobs = await a.enqueue_many("sync", [{"tenant": "t"}] * 8)
                for job in jobs:
                    await a.result(job, wait=20)
        assert len(runs) == 8
        assert {name for name, *_ in runs} == {"a", "b"}  # both apps ran jobs
        spans = sorted((start, end) for _, _, start, end in runs)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end  # one key, one at a time, across both apps

    async def test_redis_away_while_a_job_waits_is_waited_out(self) -> None:
        states: list[str] = []

        class States(guild.Instrument):
            def worker_state_changed(self, event: WorkerStateChanged) -> None:
                states.append(event.state)

        app = guild.Guild("a", instruments=[States()])
        starts: list[float] = []
        first_ran = trio.Event()

        @app.worker("q", limit=Limit(rate="1/2s"))
        async def handler(job: Job) -> None:
            starts.append(trio.current_time())
            first_ran.set()

        with running_redis_server(appendonly=True) as server, trio.fail_after(60):
            async with app.open(server.url):
                jobs = await app.enqueue_many("q", [1, 2])
                await first_ran.wait()
                # The other job waits 2 s for the rate; Redis goes away meanwhile.
                await trio.to_thread.run_sync(server.stop)
                await trio.sleep(3.0)  # past the moment it asks Redis again
                await trio.to_thread.run_sync(server.start)
                results = [await app.result(job, wait=30) for job in jobs]
        assert all(result is not None and result.ok for result in results)
        assert len(starts) == 2
        assert "restarting" not in states and "crashed" not in states
        assert starts[1] - starts[0] >= 3.0  # not before Redis came back


class TestProperties:
    @given(
        count=st.integers(min_value=1, max_value=10_000),
        every=st.integers(min_value=1, max_value=90),
        unit=st.sampled_from(
            [("ms", 0.001), ("s", 1.0), ("min", 60.0), ("hours", 3600.0), ("day", 86400.0)]
        ),
    )
    def test_rate_strings_mean_count_per_period(
        self, count: int, every: int, unit: tuple[str, float]
    ) -> None:
        name, seconds = unit
        rate = Limit(rate=f"{count}/{every}{name}").rate
        assert rate is not None
        assert (rate.rate, rate.period) == (count, every * seconds)

    @settings(max_examples=60, deadline=None)
    @given(
        steps=st.lists(
            st.tuples(st.sampled_from(["acquire", "release"]), st.integers(0, 7)), max_size=60
        ),
        max_idle=st.integers(0, 3),
    )
    def test_idle_limiters_stay_bounded_and_busy_ones_stay(
        self, steps: list[tuple[str, int]], max_idle: int
    ) -> None:
        async def run() -> None:
            limiters = KeyedLimiters(LimiterSettings(rate=None), max_idle=max_idle)
            held: dict[int, int] = {}  # key -> tokens held (the model)
            borrower = itertools.count()
            holders: dict[int, list[int]] = {}
            for action, k in steps:
                key = f"k{k}"
                if action == "acquire":
                    who = next(borrower)
                    await limiters.acquire(key, who)
                    holders.setdefault(k, []).append(who)
                    held[k] = held.get(k, 0) + 1
                elif holders.get(k):
                    limiters.release(key, holders[k].pop())
                    held[k] -= 1
                busy = {f"k{n}" for n, c in held.items() if c}
                assert all(limiters.limiter(name) is not None for name in busy)
                assert limiters.idle <= max_idle
                assert len(limiters) == len(busy) + limiters.idle

        trio.run(run, clock=trio.testing.MockClock(autojump_threshold=0))
