"""A handler that calls ``sys.exit()`` fails its own job, not the worker.

``SystemExit`` is no ``Exception``: before, it crossed the handler boundary and
ended the worker with every job it held (``guild run`` exited with ``unexpected
SystemExit``), and the job came back to do it again.
"""

from __future__ import annotations

import sys

import trio
import trio.testing

from guild import Job, JobStatus, MemoryBroker, Worker, WorkerSpec


async def test_a_handler_that_exits_is_dead_lettered_and_the_rest_run(
    autojump_clock: trio.testing.MockClock,
) -> None:
    broker = MemoryBroker()
    ran: list[int] = []

    async def handler(job: Job) -> None:
        if job.payload == 0:
            sys.exit(5)
        ran.append(job.payload)

    jobs = await broker.enqueue([Job(queue="q", payload=n, max_attempts=2) for n in range(6)])
    worker = Worker(WorkerSpec(queue="q", handler=handler, concurrency=2), broker)
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        results = [await broker.get_result(job.id, wait=600) for job in jobs]
        worker.drain()
    assert sorted(ran) == [1, 2, 3, 4, 5]
    first, *rest = results
    assert first is not None and first.status is JobStatus.DEAD
    assert first.error == "SystemExit: 5 (gave up after 2 of 2 attempts)"
    assert [r.status if r else None for r in rest] == [JobStatus.DONE] * 5
    letter = await broker.get_dead(jobs[0].id)
    assert letter is not None and letter.traceback is not None
    assert "sys.exit(5)" in letter.traceback
