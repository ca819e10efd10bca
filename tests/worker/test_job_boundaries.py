"""What one job leaves on its handler task's cancel scope (its kept deadline, a
cancel request) must not reach the next job, nor a job's own deadline or cancel
reach it after its handler returned: each race is pinned by a broker call that
takes virtual time at the exact point, over the memory broker, in virtual time."""

from __future__ import annotations

from collections.abc import Sequence

import trio
import trio.testing

import guild
from guild import Job, Limit, MemoryBroker, WorkerSpec
from guild._job import Delivery
from guild._jobinfo import JobProgress
from guild.testing import FaultyBroker

from .._poll import until
from .._serving import serve_until_results


class _SlowStart(MemoryBroker):
    """Starting a prefetched ``"second"`` takes 5 s (a slow ``Broker.start``)."""

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        if any(d.job.payload == "second" for d in deliveries):
            await trio.sleep(5.0)
        return await super().start(deliveries)


class _SlowDead(MemoryBroker):
    """A dead-letter call takes 5 s."""

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        await trio.sleep(5.0)
        await super().dead(delivery, error=error, traceback=traceback)


class _SlowProgress(MemoryBroker):
    """A progress write takes 2 s; with ``cancel_on_write``, the job written is
    asked to be cancelled as the write begins."""

    def __init__(self, *, cancel_on_write: bool = False) -> None:
        super().__init__()
        self.cancel_on_write = cancel_on_write

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        if self.cancel_on_write:
            await self.cancel([d.job.id for d, _ in updates])
        await trio.sleep(2.0)
        await super().set_progress(updates)


async def _quick(job: Job) -> str:
    await trio.sleep(0.1)
    return str(job.payload)


class TestTheLastJobsDeadline:
    async def test_it_does_not_pass_while_a_prefetched_job_is_started(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # "first" (1 s timeout, run 0.1 s) leaves its deadline on the handler's
        # scope; "second", prefetched, is started through a broker call that takes
        # 5 s, past that deadline. Its run is its own: it must not begin in a
        # scope cancelled by the deadline of the job before it.
        broker = FaultyBroker(_SlowStart())  # no start_nowait: started by broker.start
        first, second = await broker.enqueue(
            [
                Job(queue="q", payload="first", timeout=1.0),
                Job(queue="q", payload="second", timeout=1.0, max_attempts=1),
            ]
        )
        spec = WorkerSpec(queue="q", handler=_quick, concurrency=1, prefetch=1)
        worker = guild.Worker(spec, broker)
        await serve_until_results(worker, broker, second)
        for job in (first, second):
            result = await broker.get_result(job.id)
            assert result is not None and result.ok and result.value == job.payload, result
            assert result.attempts == 1

    async def test_it_does_not_pass_while_a_bad_limit_key_is_dead_lettered(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # "first" leaves its 1 s deadline; the next job's limit key cannot be made,
        # and its dead-letter call takes 5 s. The stale deadline must not cut that
        # call short: the job would stay held, its lease renewed for ever, never run.
        broker = _SlowDead()

        def tenant(job: Job) -> str:
            payload = job.payload
            assert isinstance(payload, dict)
            return str(payload["tenant"])

        first, keyless = await broker.enqueue(
            [Job(queue="q", payload={"tenant": "a"}, timeout=1.0), Job(queue="q", payload={})]
        )
        spec = WorkerSpec(
            queue="q",
            handler=_quick,
            concurrency=1,
            prefetch=0,
            limit=Limit(rate="100/s", key=tenant),
        )
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            with trio.fail_after(60):
                await until(lambda: broker.get_dead(keyless.id))
            worker.drain()
        result = await broker.get_result(first.id)
        assert result is not None and result.ok
        dead = await broker.get_dead(keyless.id)
        assert dead is not None
        assert dead.error == "limit key function raised KeyError: 'tenant'"


class TestTheLastProgressWrite:
    async def test_its_own_deadline_passing_during_it_keeps_the_result(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # The handler reports progress and returns at once (well within its 1 s);
        # its last value is written after it returned, a write that takes 2 s. The
        # run ended in time: it is done, not timed out; and it gives its limit
        # permit back (the next job, under the same concurrency-1 limit, runs).
        broker = _SlowProgress()

        async def handler(job: Job) -> str:
            guild.progress(0.5)
            return str(job.payload)

        first, second = await broker.enqueue(
            [
                Job(queue="q", payload="first", timeout=1.0, max_attempts=1),
                Job(queue="q", payload="second", timeout=1.0, max_attempts=1),
            ]
        )
        spec = WorkerSpec(
            queue="q", handler=handler, concurrency=1, prefetch=0, limit=Limit(concurrency=1)
        )
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            await broker.get_result(second.id, wait=60)
            assert worker.statistics().running == 0
            worker.drain()
        for job in (first, second):
            result = await broker.get_result(job.id)
            assert result is not None and result.ok and result.value == job.payload, result

    async def test_a_cancel_request_landing_during_it_keeps_the_result(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # A cancel request lands while the last progress of a handler that has
        # already returned is written: the job keeps its result.
        broker = _SlowProgress(cancel_on_write=True)

        async def handler(job: Job) -> str:
            guild.progress(0.5)
            return str(job.payload)

        (job,) = await broker.enqueue([Job(queue="q", payload="done")])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=1, prefetch=0)
        worker = guild.Worker(spec, broker)
        await serve_until_results(worker, broker, job)
        result = await broker.get_result(job.id)
        assert result is not None and result.ok and result.value == "done", result
        assert worker.statistics().cancelled == 0


class TestDrainWhileAnInterruptedJobWaits:
    async def test_it_goes_back_unrun(self, autojump_clock: trio.testing.MockClock) -> None:
        # An interrupted job (its last process died running it) waits to run alone
        # until the job running beside it ends; the worker drains meanwhile. Claimed
        # and not started, it goes back unrun, as every such job does in a drain:
        # it must not be started (charged) once the other job ends.
        broker = MemoryBroker()
        (suspect,) = await broker.enqueue([Job(queue="q", payload="suspect")])
        # A process takes it, starts it and dies: its lease runs out at t = 5 s.
        await broker.claim("q", consumer="gone", limit=1, lease=5)
        (beside,) = await broker.enqueue([Job(queue="q", payload="beside")])
        ran: list[object] = []

        async def handler(job: Job) -> None:
            ran.append(job.payload)
            await trio.sleep(10.0 if job.payload == "beside" else 0.1)

        spec = WorkerSpec(
            queue="q", handler=handler, concurrency=2, prefetch=0, graceful_timeout=20.0
        )
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            # "beside" runs (until t = 10 s); the suspect, claimed after t = 5 s,
            # waits for it to end.
            with trio.fail_after(7):
                await until(lambda: worker.statistics().held == 2)
            assert ran == ["beside"]
            worker.drain()
            # At once, not when "beside" ends.
            with trio.fail_after(1):
                await until(lambda: worker.statistics().held == 1)
        assert ran == ["beside"]
        done = await broker.get_result(beside.id)
        assert done is not None and done.ok
        assert await broker.get_result(suspect.id) is None
        (again,) = await broker.claim("q", consumer="next", limit=1, lease=5)
        assert (again.job.id, again.interrupted) == (suspect.id, True)
