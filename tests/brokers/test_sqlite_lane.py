"""The SQLite broker's database thread (``_sqlite_lane.Lane``): calls run one at a
time on one thread that is not Trio's, in order; a call cancelled before it is
handed over never runs; one handed over always runs, and its caller hears it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
import trio

from guild.brokers._sqlite_lane import Lane, hold_if_free


@pytest.fixture
def lane() -> Iterator[Lane]:
    thread = Lane("test-lane")
    yield thread
    thread.close()


async def test_calls_run_in_order_on_one_other_thread(lane: Lane) -> None:
    seen: list[tuple[int, int]] = []

    async def call(n: int) -> int:
        return await lane.run(lambda: seen.append((n, threading.get_ident())) or n)

    async with trio.open_nursery() as nursery:
        for n in range(20):
            nursery.start_soon(call, n)
            await trio.lowlevel.checkpoint()  # handed over in this order
    assert [n for n, _ in seen] == list(range(20))
    assert len({ident for _, ident in seen}) == 1
    assert seen[0][1] != threading.get_ident()


async def test_what_a_call_raises_reaches_its_caller(lane: Lane) -> None:
    def fail() -> None:
        raise ValueError("from the lane")

    with pytest.raises(ValueError, match="from the lane"):
        await lane.run(fail)
    assert await lane.run(lambda: 7) == 7  # the thread goes on serving


async def test_a_call_cancelled_before_it_is_handed_over_never_runs(lane: Lane) -> None:
    ran: list[str] = []
    with trio.CancelScope() as scope:
        scope.cancel()
        await lane.run(lambda: ran.append("ran"))
    assert scope.cancelled_caught
    await lane.run(lambda: None)  # anything handed over would have run by now
    assert ran == []


async def test_a_call_handed_over_runs_and_is_heard_despite_a_cancel(lane: Lane) -> None:
    entered = threading.Event()
    release = threading.Event()
    outcome: list[str] = []

    def slow() -> str:
        entered.set()
        release.wait(10)
        return "done"

    async def caller(scope: trio.CancelScope) -> None:
        with scope:
            outcome.append(await lane.run(slow))
            await trio.lowlevel.checkpoint()  # where the cancel is delivered

    scope = trio.CancelScope()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, scope)
        await trio.to_thread.run_sync(entered.wait)
        scope.cancel()
        release.set()
    assert outcome == ["done"]
    assert scope.cancelled_caught


async def test_hold_if_free_takes_a_free_limiter_and_refuses_a_held_one() -> None:
    limiter = trio.CapacityLimiter(1)
    assert hold_if_free(limiter)
    assert limiter.borrowed_tokens == 1
    done = trio.Event()

    async def other() -> None:
        assert not hold_if_free(limiter)
        done.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        await done.wait()
    limiter.release()
    assert limiter.borrowed_tokens == 0
