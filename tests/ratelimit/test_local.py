"""RateLimiter keeps trio.CapacityLimiter's contract and adds a rate, in virtual time."""

from __future__ import annotations

import math

import pytest
import trio
import trio.testing
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import guild
from guild.ratelimit import RateLimiter


class TestCapacityLimiterInterface:
    """The same calls, errors and checkpoints as trio.CapacityLimiter."""

    async def test_tokens_and_statistics(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(1000, concurrency=2, burst=10)
        assert (limiter.total_tokens, limiter.borrowed_tokens, limiter.available_tokens) == (
            2,
            0,
            2,
        )
        await limiter.acquire()
        assert limiter.borrowed_tokens == 1
        stats = limiter.statistics()
        assert stats.borrowers == [trio.lowlevel.current_task()]
        assert stats.admitted == 1
        limiter.release()
        assert limiter.available_tokens == 2

    async def test_acquire_always_checkpoints(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(1000, concurrency=2, burst=10)
        with assert_checkpoints():
            await limiter.acquire()
        limiter.release()
        with assert_checkpoints():
            async with limiter:
                pass

    async def test_nowait_and_double_acquire(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(1000, concurrency=1, burst=10)
        limiter.acquire_nowait()
        with pytest.raises(guild.RateLimitError, match="already holds"):
            limiter.acquire_nowait()
        with pytest.raises(trio.WouldBlock):
            limiter.acquire_on_behalf_of_nowait("someone else")
        with pytest.raises(guild.RateLimitError, match="does not hold"):
            limiter.release_on_behalf_of("someone else")
        limiter.release()
        limiter.acquire_on_behalf_of_nowait("someone else")
        limiter.release_on_behalf_of("someone else")

    async def test_cancelled_waiter_leaves_the_queue(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(1000, concurrency=1, burst=10)
        await limiter.acquire()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire_on_behalf_of, "waiter")
            await wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            nursery.cancel_scope.cancel()
        assert limiter.statistics().tasks_waiting == 0
        limiter.release()
        limiter.acquire_on_behalf_of_nowait("next")


class TestRate:
    """Admissions follow the GCRA schedule and waiters are served in order."""

    async def test_rate_spaces_admissions(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(10, period=1.0, burst=2)  # 0.1 s apart after a burst of 2
        times: list[float] = []
        start = trio.current_time()
        for i in range(6):
            await limiter.acquire_on_behalf_of(i)
            limiter.release_on_behalf_of(i)
            times.append(round(trio.current_time() - start, 6))
        assert times == [0.0, 0.0, 0.1, 0.2, 0.3, 0.4]
        assert limiter.statistics().waits == 4

    async def test_fifo_under_contention(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(5, period=1.0)
        order: list[int] = []

        async def take(i: int) -> None:
            await limiter.acquire_on_behalf_of(i)
            order.append(i)
            limiter.release_on_behalf_of(i)

        async with trio.open_nursery() as nursery:
            for i in range(10):
                nursery.start_soon(take, i)
                await wait_all_tasks_blocked()
        assert order == list(range(10))

    async def test_nowait_refuses_while_others_wait(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(1, period=10.0)
        limiter.acquire_on_behalf_of_nowait("a")
        limiter.release_on_behalf_of("a")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire_on_behalf_of, "b")
            await wait_all_tasks_blocked()
            with pytest.raises(trio.WouldBlock):
                limiter.acquire_on_behalf_of_nowait("c")
        assert limiter.borrowed_tokens == 1

    async def test_on_wait_hook_reports_waits(self, autojump_clock: trio.testing.MockClock) -> None:
        waits: list[float] = []
        limiter = RateLimiter(2, period=1.0, on_wait=waits.append)
        for i in range(3):
            await limiter.acquire_on_behalf_of(i)
            limiter.release_on_behalf_of(i)
        assert waits == [pytest.approx(0.5), pytest.approx(0.5)]


class TestDefaults:
    """The documented defaults, written out: one per ``period`` of 1 s, no burst, no count limit."""

    async def test_one_second_period_and_no_burst(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(4)  # 4 per second: 0.25 s apart from the very first
        times: list[float] = []
        start = trio.current_time()
        for i in range(4):
            await limiter.acquire_on_behalf_of(i)
            times.append(round(trio.current_time() - start, 6))
        assert times == [0.0, 0.25, 0.5, 0.75]

    async def test_no_count_limit_by_default(self, autojump_clock: trio.testing.MockClock) -> None:
        limiter = RateLimiter(1000, burst=100)
        assert limiter.total_tokens == math.inf
        for i in range(100):
            limiter.acquire_on_behalf_of_nowait(i)  # none released, none refused
        assert limiter.borrowed_tokens == 100
        assert limiter.available_tokens == math.inf

    @pytest.mark.parametrize("concurrency", [-1, -5])
    def test_negative_concurrency_is_refused(self, concurrency: int) -> None:
        with pytest.raises(ValueError, match=f"concurrency.*got {concurrency}"):
            RateLimiter(10, concurrency=concurrency)

    @pytest.mark.parametrize(
        ("kwargs", "message"),
        [
            ({"rate": 0}, "rate must be a positive finite number"),
            ({"rate": 1, "period": -1.0}, "period must be a positive finite number"),
            ({"rate": 1, "burst": 0}, "burst"),
        ],
    )
    def test_bad_rates_are_refused(self, kwargs: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            RateLimiter(**kwargs)  # type: ignore[arg-type]


class TestFresh:
    """is_fresh: a new limiter of the same settings would decide the same now.
    Rate 1/s, burst 2 (tolerance 1 s): two admissions at t=0 put the GCRA's
    theoretical arrival time at 2; a 5 s hold from t=12 puts it at 17 + 1 = 18."""

    async def test_holders_waiters_recharge_and_hold_off(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        limiter = RateLimiter(1, period=1.0, burst=2, concurrency=1)
        assert limiter.is_fresh()
        await limiter.acquire()
        assert not limiter.is_fresh()  # a holder
        async with trio.open_nursery() as nursery:
            nursery.start_soon(limiter.acquire_on_behalf_of, "waiter")
            await wait_all_tasks_blocked()
            limiter.release()
            await wait_all_tasks_blocked()
        limiter.release_on_behalf_of("waiter")
        # Two admitted at t=0 (the burst): fresh once both are recharged, at t=2.
        await trio.sleep(1.999)
        assert not limiter.is_fresh()
        await trio.sleep(0.001)
        assert limiter.is_fresh()

        async with trio.open_nursery() as nursery:
            await limiter.acquire()
            nursery.start_soon(limiter.acquire_on_behalf_of, "queued")
            await wait_all_tasks_blocked()
            assert limiter.statistics().tasks_waiting == 1
            limiter.release()
            assert not limiter.is_fresh()  # a waiter, then a holder
            await wait_all_tasks_blocked()
        limiter.release_on_behalf_of("queued")
        await trio.sleep(10.0)
        assert limiter.is_fresh()

        assert trio.current_time() == 12.0
        await limiter.hold_off(5.0)
        await trio.sleep(5.5)
        assert not limiter.is_fresh()  # no burst after a hold: fresh at until + 1 s
        await trio.sleep(0.5)
        assert limiter.is_fresh()
