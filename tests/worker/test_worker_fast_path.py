"""The worker's per-job path: deadlines kept across jobs, done jobs settled in
line and acked in batches, in virtual time over the memory broker."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec
from guild._codec import MAX_VALUE_CHARS, ResultJSON
from guild._job import Delivery

from .._poll import until
from .._serving import Countdown, serve_until


class _SlowAcks(MemoryBroker):
    """A memory broker whose acks take a while and are logged, batch by batch."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.batches: list[int] = []

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        self.batches.append(len(done))
        await trio.sleep(self.delay)
        await super().ack(done)


class _AckFails(MemoryBroker):
    """A memory broker whose ``fail_at``-th ack raises (a broker fault, not an outage)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at
        self.acks = 0

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        self.acks += 1
        if self.acks == self.fail_at:
            raise RuntimeError("the broker broke")
        await super().ack(done)


class TestDeadlines:
    async def test_a_job_without_a_timeout_keeps_no_deadline_of_the_job_before(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # One handler task runs a job with a 1 s timeout, then one with none that
        # runs 5 s: the first job's deadline must not cut the second short.
        broker = MemoryBroker()

        async def handler(job: Job) -> str:
            await trio.sleep(0.1 if job.payload == "quick" else 5.0)
            return str(job.payload)

        (quick,) = await broker.enqueue([Job(queue="q", payload="quick", timeout=1.0)])
        (long,) = await broker.enqueue([Job(queue="q", payload="long", max_attempts=1)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=1, prefetch=1, timeout=None)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await broker.get_result(long.id, wait=60)
            worker.drain()
        for job, value in ((quick, "quick"), (long, "long")):
            result = await broker.get_result(job.id)
            assert result is not None and result.ok and result.value == value

    async def test_a_kept_deadline_that_passes_as_the_next_job_arrives_is_not_its_timeout(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # The first job leaves its deadline (1 s, kept) on the handler's scope. The
        # second job reaches the waiting handler in the very pass of the run loop
        # in which that deadline passes (the claim moves the clock past it): the
        # scope is cancelled, yet nothing was delivered to the handler. The second
        # job must run in a fresh scope, not end as a timeout it never hit.
        clock = autojump_clock

        class _LateClaim(MemoryBroker):
            async def claim(self, queue: str, **options: object) -> list[Delivery]:
                found: list[Delivery] = await super().claim(queue, **options)  # type: ignore[arg-type]
                if any(d.job.payload == "second" for d in found):
                    clock.jump(5.0)
                return found

        broker = _LateClaim()

        async def handler(job: Job) -> str:
            await trio.sleep(0.1)
            return str(job.payload)

        (first,) = await broker.enqueue([Job(queue="q", payload="first", timeout=1.0)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=1, prefetch=0)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await broker.get_result(first.id, wait=60)
            await trio.sleep(0.5)
            (second,) = await broker.enqueue(
                [Job(queue="q", payload="second", timeout=1.0, max_attempts=1)]
            )
            await broker.get_result(second.id, wait=60)
            worker.drain()
        result = await broker.get_result(second.id)
        assert result is not None and result.ok and result.value == "second", result


class TestAcks:
    async def test_jobs_done_while_an_ack_is_in_flight_are_acked_in_the_next_batch(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = _SlowAcks(delay=0.5)
        count = 300
        countdown = Countdown(count)

        async def handler(job: Job) -> int:
            await trio.sleep(0.01 * (job.payload % 7))
            countdown.tick()
            return int(job.payload) * 3

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(count)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=16), broker)
        await serve_until(worker, countdown.finished)
        results = await broker.get_results([job.id for job in jobs])
        assert {job_id: r.value for job_id, r in results.items()} == {
            job.id: i * 3 for i, job in enumerate(jobs)
        }
        assert sum(broker.batches) == count and len(broker.batches) > 1
        assert worker.statistics().held == 0
        stats = (await broker.stats(["q"]))["q"]
        assert (stats.done, stats.ready, stats.in_flight) == (count, 0, 0)

    async def test_a_batch_is_bounded_by_count_and_by_result_text(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # Results of about half the ack batch's text bound (twice MAX_VALUE_CHARS).
        broker = _SlowAcks(delay=0.5)
        count = 12
        countdown = Countdown(count)

        async def handler(job: Job) -> str:
            countdown.tick()
            return "x" * (MAX_VALUE_CHARS - 10)

        await broker.enqueue([Job(queue="q", payload=i) for i in range(count)])
        worker = guild.Worker(WorkerSpec(queue="q", handler=handler, concurrency=count), broker)
        await serve_until(worker, countdown.finished)
        # A batch takes results while its text is under twice the bound: three.
        assert sum(broker.batches) == count
        assert max(broker.batches) == 3 and len(broker.batches) >= count // 3

    async def test_a_broker_fault_in_an_ack_loses_no_job(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # The second ack raises: the worker crashes, hands back what it holds
        # (the jobs of that batch among them), and a new worker runs them; every
        # job ends done, none is lost.
        broker = _AckFails(fail_at=2)
        runs: dict[int, int] = {}
        count = 60

        async def handler(job: Job) -> int:
            runs[job.payload] = runs.get(job.payload, 0) + 1
            await trio.sleep(0.01)
            return int(job.payload)

        jobs = await broker.enqueue([Job(queue="q", payload=i) for i in range(count)])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=8)
        crashed = False
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(guild.Worker(spec, broker).serve)
        except BaseException as error:  # the worker's crash, in a group
            crashed = isinstance(error, BaseExceptionGroup) and bool(
                error.subgroup(lambda e: isinstance(e, RuntimeError))
            )
        assert crashed
        stats = (await broker.stats(["q"]))["q"]
        assert stats.in_flight == 0  # handed back, not left to its lease

        async def all_done() -> bool:
            return len(await broker.get_results([job.id for job in jobs])) == count

        worker = guild.Worker(spec, broker)
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                await nursery.start(worker.serve)
                await until(all_done)
                worker.drain()
        results = await broker.get_results([job.id for job in jobs])
        assert sorted(r.value for r in results.values()) == list(range(count))
        assert set(runs) == set(range(count))
