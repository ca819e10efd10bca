"""RedisRateLimiter keeps trio.CapacityLimiter's contract, on a real redis-server.

trio's CapacityLimiter tests (trio/_tests/test_sync.py), restated as in
test_capacity_contract.py, plus what only a shared limiter has: the bound holds
across limiters on separate connections, and a killed process's tokens come back
when their lease runs out. Where trio checks a hand-over synchronously, these
tests wait for the admitted task to say so (a round trip to Redis lies between),
and check the holders Redis itself records with a separate client.
"""

from __future__ import annotations

import gc
import math
import os
import signal
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import coredis
import pytest
import trio
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import guild
from guild.ratelimit import RedisRateLimiter
from tests._redis_server import RedisServer, redis_command, running_redis_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture
def name(request: pytest.FixtureRequest) -> str:
    """A limiter name of the test's own, so tests sharing the server never meet."""
    return str(request.node.name)


@asynccontextmanager
async def opened(
    server: RedisServer,
    name: str,
    concurrency: int | float | None,
    *,
    lease: float = 30.0,
    poll_interval: float = 0.05,
) -> AsyncIterator[RedisRateLimiter]:
    """A limiter whose rate never binds: a million admissions a second, all in a burst."""
    async with RedisRateLimiter.open(
        server.url,
        name,
        rate=1_000_000,
        burst=1_000_000,
        concurrency=concurrency,
        lease=lease,
        poll_interval=poll_interval,
    ) as limiter:
        yield limiter


async def holders_in_redis(server: RedisServer, name: str) -> int:
    """How many tokens Redis records as held, asked on a connection of the test's own."""
    client: coredis.Redis[bytes] = coredis.Redis.from_url(server.url)
    async with client:
        return await client.zcard(f"guild:ratelimit:{name}:holders")


async def take(limiter: RedisRateLimiter, borrower: object, got: trio.Event) -> None:
    await limiter.acquire_on_behalf_of(borrower)
    got.set()


class TestTokens:
    async def test_accepts_ints_and_inf_and_refuses_the_rest(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 0) as c:
                assert c.total_tokens == 0
            async with opened(redis_server, name, math.inf) as c:
                assert c.total_tokens == math.inf
            for bad in (1.0, "2"):
                with pytest.raises(TypeError, match=r"concurrency must be an int or math\.inf"):
                    async with opened(redis_server, name, bad):  # type: ignore[arg-type]
                        pass
            with pytest.raises(ValueError, match=r"concurrency must be >= 0, got -1$"):
                async with opened(redis_server, name, -1):
                    pass

    async def test_borrow_count_and_statistics(self, redis_server: RedisServer, name: str) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 2) as c:
                assert (c.total_tokens, c.borrowed_tokens, c.available_tokens) == (2, 0, 2)
                with pytest.raises(RuntimeError, match="does not hold"):
                    c.release()
                c.acquire_nowait()
                assert (c.borrowed_tokens, c.available_tokens) == (1, 1)
                assert c.statistics().borrowers == [trio.lowlevel.current_task()]
                assert await holders_in_redis(redis_server, name) == 1

                with pytest.raises(guild.RateLimitError, match="already holds"):
                    c.acquire_nowait()
                with pytest.raises(RuntimeError, match="already holds"):
                    await c.acquire()

                with assert_checkpoints():
                    await c.acquire_on_behalf_of("someone")
                assert c.borrowed_tokens == 2
                with pytest.raises(trio.WouldBlock):
                    c.acquire_on_behalf_of_nowait("third party")
                assert set(c.statistics().borrowers) == {trio.lowlevel.current_task(), "someone"}
                assert await holders_in_redis(redis_server, name) == 2

                c.release_on_behalf_of(trio.lowlevel.current_task())
                c.release_on_behalf_of("someone")
                assert c.borrowed_tokens == 0
                with assert_checkpoints():
                    async with c:
                        assert c.borrowed_tokens == 1
                        assert await holders_in_redis(redis_server, name) == 1
                # A release travels to Redis with the next script this process runs.
                c.acquire_on_behalf_of_nowait("last")
                assert await holders_in_redis(redis_server, name) == 1
            # Closing the limiter gives back what it still held.
            assert await holders_in_redis(redis_server, name) == 0

    async def test_a_release_hands_the_token_to_the_waiter(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 2) as c, trio.open_nursery() as nursery:
                await c.acquire_on_behalf_of("value 1")
                await c.acquire_on_behalf_of("value 2")
                got = trio.Event()
                nursery.start_soon(take, c, "value 3", got)
                await wait_all_tasks_blocked()
                assert (c.borrowed_tokens, c.statistics().tasks_waiting) == (2, 1)
                # While someone waits here, nowait refuses even with a token free.
                c.release_on_behalf_of("value 2")
                with pytest.raises(trio.WouldBlock):
                    c.acquire_nowait()
                await got.wait()
                assert set(c.statistics().borrowers) == {"value 1", "value 3"}
                assert await holders_in_redis(redis_server, name) == 2

    async def test_infinite_tokens(self, redis_server: RedisServer, name: str) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, None) as c:
                for i in range(50):
                    c.acquire_on_behalf_of_nowait(i)
                assert (c.borrowed_tokens, c.available_tokens) == (50, math.inf)


class TestChangingTotalTokens:
    async def test_bad_values_are_refused_and_change_nothing(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 2) as c:
                with pytest.raises(TypeError, match=r"total_tokens must be an int or math\.inf"):
                    c.total_tokens = 1.0
                with pytest.raises(ValueError, match=r"total_tokens must be >= 0, got -1$"):
                    c.total_tokens = -1
                assert c.total_tokens == 2

    async def test_raising_admits_waiters_and_lowering_lets_holders_finish(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 2) as c, trio.open_nursery() as nursery:
                got = [trio.Event() for _ in range(5)]
                for i in range(5):
                    nursery.start_soon(take, c, i, got[i])
                    await wait_all_tasks_blocked()
                await got[0].wait()
                await got[1].wait()
                assert c.statistics().tasks_waiting == 3
                c.total_tokens += 2
                await got[2].wait()
                await got[3].wait()
                assert set(c.statistics().borrowers) == {0, 1, 2, 3}
                assert c.statistics().tasks_waiting == 1
                c.total_tokens -= 3
                for i in (0, 1, 2):
                    c.release_on_behalf_of(i)
                # 3 still holds the one token there is: 4 must wait for it, however
                # often it asks meanwhile.
                await trio.sleep(0.2)
                assert not got[4].is_set()
                c.release_on_behalf_of(3)
                await got[4].wait()
                assert set(c.statistics().borrowers) == {4}
                assert await holders_in_redis(redis_server, name) == 1

    async def test_zero_tokens_pauses_and_raising_resumes(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 0) as c, trio.open_nursery() as nursery:
                with pytest.raises(trio.WouldBlock):
                    c.acquire_nowait()
                got = [trio.Event() for _ in range(3)]
                for i in range(3):
                    nursery.start_soon(take, c, i, got[i])
                    await wait_all_tasks_blocked()
                assert (c.statistics().tasks_waiting, c.borrowed_tokens) == (3, 0)
                c.total_tokens = 3
                for event in got:
                    await event.wait()
                assert set(c.statistics().borrowers) == {0, 1, 2}
                assert await holders_in_redis(redis_server, name) == 3

    async def test_a_token_released_while_paused_still_reaches_other_processes(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with (
                opened(redis_server, name, 1, poll_interval=0.01) as here,
                opened(redis_server, name, 1, poll_interval=0.01) as elsewhere,
                trio.open_nursery() as nursery,
            ):
                here.acquire_on_behalf_of_nowait("holder")
                nursery.start_soon(here.acquire_on_behalf_of, "paused waiter")
                await wait_all_tasks_blocked()
                here.total_tokens = 0
                here.release_on_behalf_of("holder")
                # The paused waiter will make no attempt to carry the token back;
                # the other limiter must get it all the same.
                await elsewhere.acquire_on_behalf_of("other process")
                assert here.statistics().tasks_waiting == 1
                nursery.cancel_scope.cancel()


class TestCancellation:
    async def test_cancelled_waiter_keeps_no_reference_and_no_token(
        self, redis_server: RedisServer, name: str
    ) -> None:
        class Borrower:
            pass

        with trio.fail_after(10):
            async with opened(redis_server, name, 1) as c:
                await c.acquire()
                borrower = Borrower()
                gone = weakref.ref(borrower)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(c.acquire_on_behalf_of, borrower)
                    await wait_all_tasks_blocked()
                    assert c.statistics().tasks_waiting == 1
                    nursery.cancel_scope.cancel()
                del borrower
                gc.collect()
                assert gone() is None
                assert c.statistics().tasks_waiting == 0
                c.release()
                c.acquire_on_behalf_of_nowait("next")
                assert await holders_in_redis(redis_server, name) == 1


class TestAsALock:
    async def test_exclusion_across_limiters_on_separate_connections(
        self, redis_server: RedisServer, name: str
    ) -> None:
        inside = 0
        most = 0
        entries = 0

        async def worker(lock: RedisRateLimiter) -> None:
            nonlocal inside, most, entries
            for _ in range(10):
                async with lock:
                    entries += 1
                    inside += 1
                    most = max(most, inside)
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
                    inside -= 1

        with trio.fail_after(30):
            async with (
                opened(redis_server, name, 1, poll_interval=0.005) as one,
                opened(redis_server, name, 1, poll_interval=0.005) as two,
                trio.open_nursery() as nursery,
            ):
                for lock in (one, two, one, two, one):
                    nursery.start_soon(worker, lock)
        assert (entries, most) == (50, 1)

    async def test_a_busy_process_cannot_starve_another(
        self, redis_server: RedisServer, name: str
    ) -> None:
        record: list[str] = []
        going = trio.Event()

        async def busy(lock: RedisRateLimiter) -> None:
            for _ in range(30):
                async with lock:
                    record.append("busy")
                    if len(record) == 5:
                        going.set()
                    await trio.lowlevel.checkpoint()

        with trio.fail_after(30):
            async with (
                opened(redis_server, name, 1, poll_interval=0.01) as crowded,
                opened(redis_server, name, 1, poll_interval=0.01) as lone,
                trio.open_nursery() as nursery,
            ):
                for _ in range(3):
                    nursery.start_soon(busy, crowded)
                await going.wait()
                asked_at = len(record)
                async with lone:
                    record.append("lone")
        # Its process joins the line behind at most the crowded process's current
        # head; a few more admissions can be in flight meanwhile, not the other 85.
        assert record.index("lone") <= asked_at + 5
        assert record.count("busy") == 90

    async def test_fifo_fairness(self, redis_server: RedisServer, name: str) -> None:
        first_order: list[int] = []
        record: list[int] = []

        async def loopy(lock: RedisRateLimiter, name: int) -> None:
            first_order.append(name)
            for _ in range(5):
                async with lock:
                    record.append(name)

        with trio.fail_after(10):
            async with opened(redis_server, name, 1) as lock, trio.open_nursery() as nursery:
                for who in (1, 2, 3):
                    nursery.start_soon(loopy, lock, who)
        assert record == first_order * 5

    async def test_acquire_nowait_blocks_acquire(
        self, redis_server: RedisServer, name: str
    ) -> None:
        record: list[str] = []
        with trio.fail_after(10):
            async with opened(redis_server, name, 1) as lock:

                async def taker() -> None:
                    record.append("started")
                    async with lock:
                        pass
                    record.append("finished")

                async with trio.open_nursery() as nursery:
                    lock.acquire_nowait()
                    nursery.start_soon(taker)
                    await wait_all_tasks_blocked()
                    assert record == ["started"]
                    lock.release()
        assert record == ["started", "finished"]

    async def test_to_thread_run_sync_accepts_it(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with opened(redis_server, name, 1) as c:
                result = await trio.to_thread.run_sync(lambda: 42, limiter=c)  # type: ignore[arg-type]
                assert (result, c.borrowed_tokens) == (42, 0)

    async def test_two_thousand_waiters_are_admitted_in_arrival_order(
        self, redis_server: RedisServer, name: str
    ) -> None:
        arrived: list[int] = []
        admitted: list[int] = []
        with trio.fail_after(60):
            async with opened(redis_server, name, 1) as c:

                async def take_turn(i: int) -> None:
                    arrived.append(i)  # no schedule point before joining the queue
                    async with c:
                        admitted.append(i)

                c.acquire_on_behalf_of_nowait("holder")
                async with trio.open_nursery() as nursery:
                    for i in range(2000):
                        nursery.start_soon(take_turn, i)
                    await wait_all_tasks_blocked()
                    assert c.statistics().tasks_waiting == 2000
                    c.release_on_behalf_of("holder")
        assert len(arrived) == 2000
        assert admitted == arrived


HOLDER = """
import sys, trio
from guild.ratelimit import RedisRateLimiter

async def main() -> None:
    async with RedisRateLimiter.open(
        sys.argv[1], sys.argv[2], rate=1000, burst=1000, concurrency=1, lease=1.0
    ) as limiter:
        await limiter.acquire()
        print("held", flush=True)
        await trio.sleep_forever()

trio.run(main)
"""


class TestLeases:
    async def test_a_killed_holders_token_comes_back_after_its_lease(
        self, redis_server: RedisServer, name: str
    ) -> None:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-c", HOLDER, redis_server.url, name],
            stdout=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            assert process.stdout is not None
            said = b""
            with trio.fail_after(30):
                while not said.endswith(b"\n"):
                    chunk = await process.stdout.receive_some()
                    assert chunk, f"the holder exited early: {said!r}"
                    said += chunk
            assert said == b"held\n"
            async with opened(redis_server, name, 1, lease=1.0) as c:
                with pytest.raises(trio.WouldBlock):
                    c.acquire_nowait()
                process.send_signal(signal.SIGKILL)
                await process.wait()
                with trio.fail_after(10):
                    await c.acquire()
                assert await holders_in_redis(redis_server, name) == 1
        finally:
            if process.returncode is None:
                process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
                if process.stdout is not None:
                    await process.stdout.aclose()

    async def test_a_live_holder_keeps_its_token_past_the_lease(
        self, redis_server: RedisServer, name: str
    ) -> None:
        with trio.fail_after(10):
            async with (
                opened(redis_server, name, 1, lease=0.3) as holder,
                opened(redis_server, name, 1, lease=0.3) as other,
            ):
                holder.acquire_nowait()
                await trio.sleep(1.0)  # more than three leases: only renewal keeps it
                with pytest.raises(trio.WouldBlock):
                    other.acquire_nowait()
                holder.release()
                await wait_all_tasks_blocked()
                with trio.move_on_after(5):
                    await other.acquire()
                assert other.borrowed_tokens == 1

    async def test_a_clobbered_key_is_a_typed_error_naming_the_limiter(
        self, redis_server: RedisServer, name: str
    ) -> None:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server.url)
        with trio.fail_after(10):
            async with client:
                await client.set(f"guild:ratelimit:{name}:holders", "not a sorted set")
            says = (
                f"rate limiter '{name}': the key guild:ratelimit:{name}:holders holds a string,"
                " not a sorted set (another program's key under guild's prefix?)"
            )
            async with opened(redis_server, name, 1) as c:
                with pytest.raises(guild.BrokerDataError) as refused:
                    c.acquire_nowait()
                assert str(refused.value) == says
                with pytest.raises(guild.BrokerDataError) as refused:
                    await c.acquire()
                assert str(refused.value) == says
                assert (c.borrowed_tokens, c.statistics().tasks_waiting) == (0, 0)

    async def test_redis_going_away_is_broker_unavailable_for_nowait_too(self) -> None:
        with running_redis_server() as server, trio.fail_after(30):
            async with opened(server, "gone", 1) as c:
                c.acquire_on_behalf_of_nowait("before")
                server.stop()
                with pytest.raises(guild.BrokerUnavailable, match="unreachable"):
                    c.acquire_on_behalf_of_nowait("after")
                with pytest.raises(guild.BrokerUnavailable, match="unreachable"):
                    await c.acquire_on_behalf_of("after")
                c.release_on_behalf_of("before")

    async def test_tokens_outside_open_are_refused_with_a_clear_error(
        self, redis_server: RedisServer, name: str
    ) -> None:
        client: coredis.Redis[bytes] = coredis.Redis.from_url(redis_server.url)
        with trio.fail_after(10):
            async with client:
                limiter = RedisRateLimiter(client, name, 10, concurrency=1)
                with pytest.raises(guild.RateLimitError, match="nothing renewing its leases"):
                    await limiter.acquire()
                assert await limiter.try_acquire()  # the rate alone needs no lease


async def test_a_key_of_another_type_is_a_broker_data_error(redis_server: RedisServer) -> None:
    # Another program's string where the limiter keeps its holders: every acquire
    # fails the same way until it is deleted, which a worker waits out (a
    # BrokerDataError) rather than crash on.
    name = "wrong-type-limiter"
    holders = f"guild:ratelimit:{name}:holders"
    assert redis_command(redis_server, "SET", holders, "junk") == b"+OK\r\n"
    async with RedisRateLimiter.open(redis_server.url, name, rate=None, concurrency=1) as limiter:
        with trio.fail_after(10), pytest.raises(guild.BrokerDataError) as refused:
            await limiter.acquire_on_behalf_of("a")
        assert str(refused.value) == (
            f"rate limiter {name!r}: the key {holders} holds a string, not a sorted set"
            " (another program's key under guild's prefix?)"
        )
