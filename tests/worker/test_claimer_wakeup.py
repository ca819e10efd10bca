"""The claimer's wait for capacity, on a broker that keeps idle registrations:
a job that finishes while the registration is being ended still wakes it."""

from __future__ import annotations

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker, WorkerSpec


class _SlowUnregister(MemoryBroker):
    """A memory broker with a ``stop_claiming`` that takes a second (the round
    trip that ends a Redis idle registration, drawn out)."""

    def __init__(self) -> None:
        super().__init__()
        self.unregistered = 0

    async def stop_claiming(self, queue: str, consumer: str) -> None:
        self.unregistered += 1
        await trio.sleep(1.0)


class TestClaimerWakeup:
    async def test_a_job_finished_during_the_unregister_frees_its_slot(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        # One slot: the first job fills it, so the claimer ends its registration,
        # and the job finishes (and is acked) while that call is on its way. The
        # claimer must still see the slot free, and claim the second job.
        broker = _SlowUnregister()

        async def handler(job: Job) -> str:
            await trio.sleep(0.1)
            return str(job.payload)

        (first,) = await broker.enqueue([Job(queue="q", payload="first")])
        spec = WorkerSpec(queue="q", handler=handler, concurrency=1, prefetch=0, timeout=None)
        worker = guild.Worker(spec, broker)
        async with trio.open_nursery() as nursery:
            await nursery.start(worker.serve)
            done = await broker.get_result(first.id, wait=60)
            assert done is not None and done.ok
            assert broker.unregistered >= 1
            await trio.sleep(5.0)  # the unregister returned long ago
            (second,) = await broker.enqueue([Job(queue="q", payload="second")])
            result = await broker.get_result(second.id, wait=60)
            worker.drain()
        assert result is not None and result.ok and result.value == "second"
