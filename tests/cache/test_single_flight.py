"""@cached single flight: a leader's cancellation is its own, never its followers'."""

from __future__ import annotations

import functools

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker
from guild.cache import MemoryCache, cached

from .._poll import until
from .._state_log import StateLog


class Slow:
    """A function that takes ``seconds`` per call and counts its calls."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[float] = []

    async def __call__(self, x: int) -> int:
        self.calls.append(trio.current_time())
        await trio.sleep(self.seconds)
        return x * 10


class TestLeaderCancelled:
    async def test_a_follower_runs_it_again_and_gets_the_value(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        slow = Slow(5.0)
        compute = cached(MemoryCache(), ttl=60)(slow)
        results: dict[str, object] = {}

        async def leader() -> None:
            with trio.move_on_after(2.0):
                results["leader"] = await compute(1)

        async def follower(name: str) -> None:
            await trio.sleep(1.0)  # joins the leader's flight
            results[name] = await compute(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(leader)
            for name in ("f1", "f2", "f3"):
                nursery.start_soon(follower, name)
        # The leader timed out at 2; exactly one follower led a second call then,
        # which ended at 2 + 5; the other two followed it.
        assert slow.calls == [0.0, 2.0]
        assert results == {"f1": 10, "f2": 10, "f3": 10}
        assert trio.current_time() == 7.0

    async def test_a_later_call_after_an_abandoned_flight_leads(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        slow = Slow(5.0)
        compute = cached(MemoryCache(), ttl=60)(slow)
        with trio.move_on_after(1.0):
            await compute(2)
        assert await compute(2) == 20
        assert slow.calls == [0.0, 1.0]

    async def test_an_exception_still_reaches_every_follower(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        calls = 0

        @cached(MemoryCache(), ttl=60)
        async def broken(x: int) -> int:
            nonlocal calls
            calls += 1
            await trio.sleep(1.0)
            raise LookupError(f"no {x}")

        errors: list[str] = []

        async def call() -> None:
            try:
                await broken(3)
            except LookupError as error:
                errors.append(str(error))

        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(call)
        assert errors == ["no 3"] * 3
        assert calls == 1


class TestInAWorker:
    async def test_a_timed_out_leader_job_leaves_the_follower_job_and_the_worker_alone(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        slow = Slow(5.0)
        lookup = cached(MemoryCache(), ttl=60)(slow)
        log = StateLog()
        app = guild.Guild("flights", instruments=[log])
        results: dict[str, int] = {}

        @app.worker("q", concurrency=2, max_attempts=1, timeout=30.0)
        async def handle(job: Job) -> int:
            if job.payload == "follower":
                # Trio runs ready tasks in no fixed order: the follower waits until
                # the leader's call is surely under way, so it joins as a follower.
                await trio.sleep(1.0)
            value = await lookup(1)
            results[str(job.payload)] = value
            return value

        broker = MemoryBroker()
        # The leader's own timeout (2 s) ends its attempt mid-call; the follower's
        # (30 s) leaves room for the call it must then run itself.
        await broker.enqueue([Job(queue="q", payload="leader", timeout=2.0, max_attempts=1)])
        await broker.enqueue([Job(queue="q", payload="follower", max_attempts=1)])
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
            await until(lambda: "follower" in results)
            await until(lambda: _settled(broker, 2))
            stop.set()
        assert results == {"follower": 10}
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.dead) == (1, 1)
        (dead,) = await broker.list_dead("q")
        assert dead.job.payload == "leader"
        assert dead.error.startswith("JobTimeout")
        assert log.count("crashed") == 0
        assert len(slow.calls) == 2


async def _settled(broker: MemoryBroker, count: int) -> bool:
    stats = (await broker.stats(["q"]))["q"]
    return stats.done + stats.dead >= count
