"""RateLimiter keeps trio.CapacityLimiter's contract to the letter.

These are trio's own CapacityLimiter tests (trio/_tests/test_sync.py:
test_CapacityLimiter, _inf, _change_total_tokens, _memleak_548,
_zero_limit_tokens and the generic lock tests), restated for guild's limiter.
The rate is set so high that it never binds here, so any difference from trio
is a difference in the count logic. Expected values are written out as trio's
tests have them; where trio raises RuntimeError, guild raises RateLimitError,
which is one.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from trio.testing import assert_checkpoints, wait_all_tasks_blocked

import guild
from guild.ratelimit import RateLimiter


def limiter(concurrency: int | float | None) -> RateLimiter:
    """A limiter whose rate never binds: a million admissions a second, all in a burst."""
    return RateLimiter(1_000_000, burst=1_000_000, concurrency=concurrency)


class TestTokens:
    """trio's test_CapacityLimiter and test_CapacityLimiter_inf."""

    def test_accepts_ints_and_inf_and_refuses_the_rest(self) -> None:
        assert limiter(0).total_tokens == 0
        assert limiter(math.inf).total_tokens == math.inf
        assert limiter(None).total_tokens == math.inf
        for bad in (1.0, 2.5, "2", True):
            with pytest.raises(TypeError, match=r"concurrency must be an int or math\.inf"):
                limiter(bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match=r"concurrency must be >= 0, got -1$"):
            limiter(-1)

    async def test_borrow_count_and_statistics(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(2)
        assert "0/2 borrowed" in repr(c)
        assert (c.total_tokens, c.borrowed_tokens, c.available_tokens) == (2, 0, 2)
        with pytest.raises(RuntimeError, match="does not hold"):
            c.release()
        assert c.borrowed_tokens == 0
        c.acquire_nowait()
        assert (c.borrowed_tokens, c.available_tokens) == (1, 1)
        stats = c.statistics()
        assert (stats.borrowed_tokens, stats.total_tokens, stats.tasks_waiting) == (1, 2, 0)
        assert stats.borrowers == [trio.lowlevel.current_task()]

        # A borrower cannot take a second token, waiting or not.
        with pytest.raises(guild.RateLimitError, match="already holds"):
            c.acquire_nowait()
        with pytest.raises(RuntimeError, match="already holds"):
            await c.acquire()
        assert c.borrowed_tokens == 1

        # Someone else can, and that checkpoints.
        with assert_checkpoints():
            await c.acquire_on_behalf_of("someone")
        assert c.borrowed_tokens == 2
        with pytest.raises(trio.WouldBlock):
            c.acquire_on_behalf_of_nowait("third party")
        assert set(c.statistics().borrowers) == {trio.lowlevel.current_task(), "someone"}

        c.release_on_behalf_of(trio.lowlevel.current_task())
        assert c.statistics().borrowers == ["someone"]
        c.release_on_behalf_of("someone")
        assert c.borrowed_tokens == 0
        with assert_checkpoints():
            async with c:
                assert c.borrowed_tokens == 1
        assert c.borrowed_tokens == 0

    async def test_a_release_hands_the_token_to_the_waiter(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(2)
        async with trio.open_nursery() as nursery:
            await c.acquire_on_behalf_of("value 1")
            await c.acquire_on_behalf_of("value 2")
            nursery.start_soon(c.acquire_on_behalf_of, "value 3")
            await wait_all_tasks_blocked()
            assert (c.borrowed_tokens, c.statistics().tasks_waiting) == (2, 1)
            c.release_on_behalf_of("value 2")
            # Handed over at once: the waiter holds it before it even runs, so a
            # newcomer finds no token.
            assert set(c.statistics().borrowers) == {"value 1", "value 3"}
            with pytest.raises(trio.WouldBlock):
                c.acquire_nowait()
        c.release_on_behalf_of("value 3")
        c.release_on_behalf_of("value 1")
        assert c.borrowed_tokens == 0

    async def test_infinite_tokens(self, autojump_clock: trio.testing.MockClock) -> None:
        c = limiter(math.inf)
        assert (c.total_tokens, c.borrowed_tokens, c.available_tokens) == (math.inf, 0, math.inf)
        with pytest.raises(RuntimeError):
            c.release()
        c.acquire_nowait()
        assert (c.borrowed_tokens, c.available_tokens) == (1, math.inf)


class TestChangingTotalTokens:
    """trio's test_CapacityLimiter_change_total_tokens and _zero_limit_tokens."""

    async def test_bad_values_are_refused_and_change_nothing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(2)
        with pytest.raises(TypeError, match=r"total_tokens must be an int or math\.inf, got 1\.0"):
            c.total_tokens = 1.0
        for bad in (-1, -10):
            with pytest.raises(ValueError, match=rf"total_tokens must be >= 0, got {bad}$"):
                c.total_tokens = bad
        assert c.total_tokens == 2

    async def test_raising_admits_waiters_at_once_and_lowering_lets_holders_finish(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(2)
        async with trio.open_nursery() as nursery:
            for i in range(5):
                nursery.start_soon(c.acquire_on_behalf_of, i)
                await wait_all_tasks_blocked()
            assert set(c.statistics().borrowers) == {0, 1}
            assert c.statistics().tasks_waiting == 3
            c.total_tokens += 2
            assert set(c.statistics().borrowers) == {0, 1, 2, 3}
            assert c.statistics().tasks_waiting == 1
            c.total_tokens -= 3
            assert (c.borrowed_tokens, c.total_tokens) == (4, 1)
            for i in (0, 1, 2):
                c.release_on_behalf_of(i)
            assert set(c.statistics().borrowers) == {3}
            assert c.statistics().tasks_waiting == 1
            c.release_on_behalf_of(3)
            assert set(c.statistics().borrowers) == {4}
            assert c.statistics().tasks_waiting == 0
        c.release_on_behalf_of(4)

    async def test_zero_tokens_pauses_and_raising_resumes(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(5)
        async with trio.open_nursery() as nursery:
            c.total_tokens = 0
            for i in range(5):
                nursery.start_soon(c.acquire_on_behalf_of, i)
                await wait_all_tasks_blocked()
            assert c.statistics().borrowers == []
            assert c.statistics().tasks_waiting == 5

            c.total_tokens = 5
            assert set(c.statistics().borrowers) == {0, 1, 2, 3, 4}
            nursery.start_soon(c.acquire_on_behalf_of, 5)
            await wait_all_tasks_blocked()
            assert c.statistics().tasks_waiting == 1
            for i in range(5):
                c.release_on_behalf_of(i)
            assert c.statistics().tasks_waiting == 0
            c.release_on_behalf_of(5)

            # Paused again: nothing gets through, waiting or not.
            c.total_tokens = 0
            with pytest.raises(trio.WouldBlock):
                c.acquire_nowait()
            nursery.start_soon(c.acquire_on_behalf_of, 6)
            await wait_all_tasks_blocked()
            assert (c.statistics().tasks_waiting, c.statistics().borrowers) == (1, [])
            c.total_tokens = 1
            assert (c.statistics().tasks_waiting, c.statistics().borrowers) == (0, [6])
            c.release_on_behalf_of(6)

            # Paused while someone holds a token: its release admits no one.
            await c.acquire_on_behalf_of(0)
            nursery.start_soon(c.acquire_on_behalf_of, 1)
            await wait_all_tasks_blocked()
            c.total_tokens = 0
            assert c.statistics().borrowers == [0]
            c.release_on_behalf_of(0)
            await wait_all_tasks_blocked()
            assert (c.statistics().tasks_waiting, c.statistics().borrowers) == (1, [])
            c.total_tokens = 1
            await wait_all_tasks_blocked()
            assert (c.statistics().tasks_waiting, c.statistics().borrowers) == (0, [1])
            c.release_on_behalf_of(1)

            c.total_tokens = 0
            nursery.cancel_scope.cancel()
        assert c.total_tokens == 0
        assert c.statistics().borrowers == []


class TestCancellation:
    """trio's test_CapacityLimiter_memleak_548: a cancelled waiter leaves nothing behind."""

    async def test_cancelled_waiter_keeps_no_reference(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(1)
        await c.acquire()

        class Borrower:
            pass

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
        assert c.statistics().borrowers == [trio.lowlevel.current_task()]

    async def test_cancelled_head_passes_its_turn_to_the_next(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(1)
        c.acquire_on_behalf_of_nowait("holder")
        async with trio.open_nursery() as nursery:
            first = trio.CancelScope()

            async def cancellable() -> None:
                with first:
                    await c.acquire_on_behalf_of("first")

            nursery.start_soon(cancellable)
            await wait_all_tasks_blocked()
            nursery.start_soon(c.acquire_on_behalf_of, "second")
            await wait_all_tasks_blocked()
            first.cancel()
            await wait_all_tasks_blocked()
            c.release_on_behalf_of("holder")
            assert c.statistics().borrowers == ["second"]
        c.release_on_behalf_of("second")


class TestAsALock:
    """trio's generic lock tests, with RateLimiter(concurrency=1) as the lock."""

    async def test_exclusion(self, autojump_clock: trio.testing.MockClock) -> None:
        lock = limiter(1)
        inside = False
        entries = 0

        async def worker() -> None:
            nonlocal inside, entries
            for _ in range(10):
                async with lock:
                    entries += 1
                    assert not inside
                    inside = True
                    await trio.lowlevel.checkpoint()
                    await trio.lowlevel.checkpoint()
                    assert inside
                    inside = False

        async with trio.open_nursery() as nursery:
            for _ in range(5):
                nursery.start_soon(worker)
        assert not inside
        assert entries == 50

    async def test_fifo_fairness(self, autojump_clock: trio.testing.MockClock) -> None:
        lock = limiter(1)
        first_order: list[int] = []
        record: list[int] = []

        async def loopy(name: int) -> None:
            first_order.append(name)
            for _ in range(5):
                async with lock:
                    record.append(name)

        async with trio.open_nursery() as nursery:
            for name in (1, 2, 3):
                nursery.start_soon(loopy, name)
        # The first round follows the scheduler; every later round repeats it.
        assert record == first_order * 5

    async def test_acquire_nowait_blocks_acquire(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        lock = limiter(1)
        record: list[str] = []

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
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(1)
        assert await trio.to_thread.run_sync(lambda: 42, limiter=c) == 42  # type: ignore[arg-type]
        assert c.borrowed_tokens == 0


class TestHandOver:
    """A release wakes one waiter, whatever the queue's length, and order is arrival order."""

    async def test_two_thousand_waiters_are_admitted_in_arrival_order(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = limiter(1)
        arrived: list[int] = []
        admitted: list[int] = []

        async def take(i: int) -> None:
            # No schedule point between the append and joining the queue.
            arrived.append(i)
            async with c:
                admitted.append(i)
                await trio.lowlevel.checkpoint()

        c.acquire_on_behalf_of_nowait("holder")
        async with trio.open_nursery() as nursery:
            for i in range(2000):
                nursery.start_soon(take, i)
            await wait_all_tasks_blocked()
            assert c.statistics().tasks_waiting == 2000
            c.release_on_behalf_of("holder")
        assert len(arrived) == 2000
        assert admitted == arrived

    async def test_a_release_reschedules_only_the_next_waiter(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        class CountWakeups(trio.abc.Instrument):
            def __init__(self) -> None:
                self.woken: list[trio.lowlevel.Task] = []

            def task_scheduled(self, task: trio.lowlevel.Task) -> None:
                self.woken.append(task)

        c = limiter(1)
        c.acquire_on_behalf_of_nowait("holder")
        tasks: dict[int, trio.lowlevel.Task] = {}

        async def take(i: int) -> None:
            tasks[i] = trio.lowlevel.current_task()
            await c.acquire_on_behalf_of(i)

        async with trio.open_nursery() as nursery:
            for i in range(500):
                nursery.start_soon(take, i)
                await wait_all_tasks_blocked()
            counter = CountWakeups()
            trio.lowlevel.add_instrument(counter)
            try:
                c.release_on_behalf_of("holder")
            finally:
                trio.lowlevel.remove_instrument(counter)
            assert counter.woken == [tasks[0]]
            assert c.statistics().borrowers == [0]
            nursery.cancel_scope.cancel()


class TestRateOnTop:
    """The count and the rate together: FIFO holds while the rate spaces admissions."""

    async def test_rate_bound_waiters_keep_their_order_and_spacing(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = RateLimiter(10, concurrency=2)  # one every 0.1 s, at most two at once
        admitted: list[tuple[int, float]] = []
        start = trio.current_time()

        async def take(i: int) -> None:
            async with c:
                admitted.append((i, round(trio.current_time() - start, 6)))
                await trio.sleep(0.35)

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(take, i)
                await wait_all_tasks_blocked()
        # Worked by hand: 0 and 1 enter at 0.0 and 0.1 (rate); 2 waits for 0's
        # token at 0.35, 3 for 1's at 0.45, 4 for 2's at 0.70, 5 for 3's at 0.80.
        assert admitted == [(0, 0.0), (1, 0.1), (2, 0.35), (3, 0.45), (4, 0.7), (5, 0.8)]

    async def test_a_rate_blocked_head_that_is_cancelled_passes_the_wait_on(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        c = RateLimiter(1, period=10.0)  # one every 10 s
        c.acquire_on_behalf_of_nowait("first")
        c.release_on_behalf_of("first")
        start = trio.current_time()
        entered: dict[str, float] = {}

        async def take(name: str) -> None:
            await c.acquire_on_behalf_of(name)
            entered[name] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            head = trio.CancelScope()

            async def cancellable() -> None:
                with head:
                    await take("head")

            nursery.start_soon(cancellable)
            await wait_all_tasks_blocked()
            nursery.start_soon(take, "next")
            await wait_all_tasks_blocked()
            head.cancel()
        assert entered == {"next": 10.0}


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("arrive"), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 50)),
        st.tuples(st.just("cancel"), st.integers(0, 50)),
        st.tuples(st.just("total"), st.integers(0, 4)),
    ),
    max_size=40,
)


class TestAgainstAModel:
    """Any mix of arrivals, releases, cancellations and new totals matches a FIFO model."""

    @given(st.integers(0, 3), OPERATIONS)
    @settings(deadline=None, max_examples=75)
    def test_holders_and_queue_match_the_model(
        self, initial: int, operations: list[tuple[str, int]]
    ) -> None:
        # The model, kept apart from the code under test: who holds a token, who
        # waits in arrival order, and the eager rule that the head is admitted
        # whenever fewer than ``total`` hold one.
        holders: list[int] = []
        queue: list[int] = []
        total = initial

        def fill() -> None:
            while queue and len(holders) < total:
                holders.append(queue.pop(0))

        async def main() -> None:
            nonlocal total
            c = limiter(initial)
            scopes: dict[int, trio.CancelScope] = {}

            async def wait_for_token(who: int, scope: trio.CancelScope) -> None:
                with scope:
                    await c.acquire_on_behalf_of(who)

            async with trio.open_nursery() as nursery:
                for who, (operation, pick) in enumerate(operations):
                    if operation == "arrive":
                        scopes[who] = trio.CancelScope()
                        nursery.start_soon(wait_for_token, who, scopes[who])
                        queue.append(who)
                        fill()
                    elif operation == "release" and holders:
                        leaving = holders.pop(pick % len(holders))
                        c.release_on_behalf_of(leaving)
                        fill()
                    elif operation == "cancel" and queue:
                        scopes[queue.pop(pick % len(queue))].cancel()
                    elif operation == "total":
                        total = pick
                        c.total_tokens = pick
                        fill()
                    await wait_all_tasks_blocked()
                    assert sorted(c.statistics().borrowers) == sorted(holders)  # type: ignore[type-var]
                    assert c.statistics().tasks_waiting == len(queue)
                nursery.cancel_scope.cancel()

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
