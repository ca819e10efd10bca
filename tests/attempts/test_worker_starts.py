"""The worker's side of attempt accounting, over the memory broker in virtual time:
prefetched jobs are started in shared broker calls, and an interrupted job runs alone."""

from __future__ import annotations

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild.testing import FaultyBroker
from tests._serving import Countdown, serve_until


async def _suspect(broker: MemoryBroker) -> Job:
    """A job a process took, started and died with: its lease (5 s) has run out."""
    (suspect,) = await broker.enqueue([Job(queue="q", payload="suspect")])
    await broker.claim("q", consumer="gone", limit=1, lease=5)
    await trio.sleep(6)
    return suspect


class _Beside:
    """A handler that notes who runs beside each job as it begins, and beside the
    suspect as it ends; it holds each job ``hold`` seconds, then ticks ``countdown``."""

    def __init__(self, count: int, hold: float) -> None:
        self.countdown = Countdown(count)
        self.hold = hold
        self.running: set[object] = set()
        self.beside: list[set[object]] = []

    async def handler(self, job: Job) -> None:
        self.running.add(job.payload)
        self.beside.append(set(self.running))
        await trio.sleep(self.hold)
        if job.payload == "suspect":
            self.beside.append(set(self.running))
        self.running.discard(job.payload)
        self.countdown.tick()

    def with_suspect(self) -> list[set[object]]:
        return [seen for seen in self.beside if "suspect" in seen]


class TestPrefetchedStarts:
    async def test_handlers_starting_together_share_one_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # FaultyBroker has no start_nowait: the worker starts through broker.start.
        broker = FaultyBroker(MemoryBroker())
        countdown = Countdown(8)

        async def handler(job: Job) -> object:
            await trio.sleep(1)
            countdown.tick()
            return job.payload

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(8)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4)
        await serve_until(guild.Worker(spec, broker), countdown.finished)
        # Four of the eight waited, prefetched; the four handlers that took them at
        # the same moment started them in one call (two if the first claim came
        # before any handler waited, and started none).
        assert 1 <= broker.calls.get("start", 0) <= 2
        results = [await broker.get_result(job.id) for job in jobs]
        assert [(r.ok, r.attempts) for r in results if r is not None] == [(True, 1)] * 8

    async def test_idle_handlers_are_not_prefetched_for(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # Short jobs (each done in the scheduling round its handler takes it), and
        # starts that cost a call: each claim takes only what the idle handlers
        # start. A job prefetched beside them would make a handler, done with its
        # job at once, wait for a start call of its own.
        broker = FaultyBroker(MemoryBroker())
        countdown = Countdown(40)

        async def handler(job: Job) -> object:
            countdown.tick()
            return job.payload

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(40)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4)
        await serve_until(guild.Worker(spec, broker), countdown.finished)
        assert broker.calls.get("start", 0) == 0
        results = [await broker.get_result(job.id) for job in jobs]
        assert [(r.ok, r.attempts) for r in results if r is not None] == [(True, 1)] * 40

    async def test_busy_handlers_are_prefetched_for(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = FaultyBroker(MemoryBroker())
        countdown = Countdown(12)

        async def handler(job: Job) -> object:
            await trio.sleep(1)
            countdown.tick()
            return job.payload

        await broker.enqueue([Job(queue="q", payload=i) for i in range(12)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4)
        async with trio.open_nursery() as nursery:
            worker = guild.Worker(spec, broker)
            await nursery.start(worker.serve)
            await trio.sleep(0.5)
            # Four run, four wait beside them, uncounted.
            stats = (await broker.stats(["q"]))["q"]
            assert (stats.in_flight, stats.ready) == (8, 4)
            await countdown.finished.wait()
            worker.drain()


class TestInterruptedRunsAlone:
    async def test_nothing_runs_or_starts_beside_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        suspect = await _suspect(broker)
        await broker.enqueue([Job(queue="q", payload=i) for i in range(6)])
        watch = _Beside(7, hold=1)
        spec = WorkerSpec(queue="q", handler=watch.handler, concurrency=4, prefetch=4)
        await serve_until(guild.Worker(spec, broker), watch.countdown.finished)
        # Alone when it began and when it ended; nobody began while it ran.
        assert watch.with_suspect() == [{"suspect"}, {"suspect"}]
        result = await broker.get_result(suspect.id)
        assert result is not None and result.ok and result.attempts == 2

    async def test_a_claim_out_when_it_is_taken_starts_nothing_beside_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # The worker takes the suspect and at once claims again, asking the broker
        # to start jobs for its three idle handlers; that claim waits for work.
        # The jobs it is answered with arrive while the suspect runs: if the claim
        # had started them, they would run, and be charged, beside it.
        broker = MemoryBroker()
        suspect = await _suspect(broker)
        watch = _Beside(4, hold=2)
        later: list[Job] = []

        async def enqueue_later() -> None:
            await trio.sleep(0.5)
            later.extend(await broker.enqueue([Job(queue="q", payload=i) for i in range(3)]))

        spec = WorkerSpec(
            queue="q", handler=watch.handler, concurrency=4, prefetch=4, claim_wait=1.0
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(enqueue_later)
            await serve_until(guild.Worker(spec, broker), watch.countdown.finished)
        assert watch.with_suspect() == [{"suspect"}, {"suspect"}]
        # The three waited for it, and then ran once each.
        results = [await broker.get_result(job.id) for job in [suspect, *later]]
        assert [(r.ok, r.attempts) for r in results if r is not None] == [
            (True, 2),
            (True, 1),
            (True, 1),
            (True, 1),
        ]
