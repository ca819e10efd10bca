"""The worker's side of attempt accounting, over the memory broker in virtual time:
prefetched jobs are started in shared broker calls, and an interrupted job runs alone."""

from __future__ import annotations

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild.testing import FaultyBroker


async def _serve_until(worker: guild.Worker, finished: trio.Event) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await finished.wait()
        worker.drain()


class TestPrefetchedStarts:
    async def test_handlers_starting_together_share_one_call(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # FaultyBroker has no start_nowait: the worker starts through broker.start.
        broker = FaultyBroker(MemoryBroker())
        done: list[int] = []
        finished = trio.Event()

        async def handler(job: Job) -> object:
            await trio.sleep(1)
            done.append(job.payload)
            if len(done) == 8:
                finished.set()
            return job.payload

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(8)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4)
        await _serve_until(guild.Worker(spec, broker), finished)
        # Four of the eight waited, prefetched; the four handlers that took them at
        # the same moment started them in one call (two if the first claim came
        # before any handler waited, and started none).
        assert 1 <= broker.calls.get("start", 0) <= 2
        results = [await broker.get_result(job.id) for job in jobs]
        assert [(r.ok, r.attempts) for r in results if r is not None] == [(True, 1)] * 8


class TestInterruptedRunsAlone:
    async def test_nothing_runs_or_starts_beside_it(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        (suspect,) = await broker.enqueue([Job(queue="q", payload="suspect")])
        # A process took it, started it and died: its lease runs out.
        await broker.claim("q", consumer="gone", limit=1, lease=5)
        await trio.sleep(6)
        await broker.enqueue([Job(queue="q", payload=i) for i in range(6)])
        running: set[object] = set()
        beside: list[set[object]] = []
        finished = trio.Event()
        done = 0

        async def handler(job: Job) -> None:
            nonlocal done
            running.add(job.payload)
            beside.append(set(running))
            await trio.sleep(1)
            if job.payload == "suspect":
                beside.append(set(running))
            running.discard(job.payload)
            done += 1
            if done == 7:
                finished.set()

        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4)
        await _serve_until(guild.Worker(spec, broker), finished)
        # Alone when it began and when it ended; nobody began while it ran.
        assert [seen for seen in beside if "suspect" in seen] == [{"suspect"}, {"suspect"}]
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
        (suspect,) = await broker.enqueue([Job(queue="q", payload="suspect")])
        await broker.claim("q", consumer="gone", limit=1, lease=5)
        await trio.sleep(6)
        running: set[object] = set()
        beside: list[set[object]] = []
        finished = trio.Event()
        done = 0

        async def handler(job: Job) -> None:
            nonlocal done
            running.add(job.payload)
            beside.append(set(running))
            await trio.sleep(2)
            if job.payload == "suspect":
                beside.append(set(running))
            running.discard(job.payload)
            done += 1
            if done == 4:
                finished.set()

        later: list[Job] = []

        async def enqueue_later() -> None:
            await trio.sleep(0.5)
            later.extend(await broker.enqueue([Job(queue="q", payload=i) for i in range(3)]))

        spec = WorkerSpec(queue="q", handler=handler, concurrency=4, prefetch=4, claim_wait=1.0)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(enqueue_later)
            await _serve_until(guild.Worker(spec, broker), finished)
        assert [seen for seen in beside if "suspect" in seen] == [{"suspect"}, {"suspect"}]
        # The three waited for it, and then ran once each.
        results = [await broker.get_result(job.id) for job in [suspect, *later]]
        assert [(r.ok, r.attempts) for r in results if r is not None] == [
            (True, 2),
            (True, 1),
            (True, 1),
            (True, 1),
        ]
