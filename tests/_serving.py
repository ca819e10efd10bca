"""Running a worker in a test until its jobs are done (what the worker tests share)."""

from __future__ import annotations

import trio

import guild


async def serve_until(worker: guild.Worker, finished: trio.Event) -> None:
    """Serve ``worker`` until ``finished`` is set, then drain it and return."""
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        await finished.wait()
        worker.drain()


async def serve_until_results(
    worker: guild.Worker, broker: guild.Broker, *jobs: guild.Job, wait: float = 60.0
) -> None:
    """Serve ``worker`` until each of ``jobs`` has its result (waiting up to ``wait``
    seconds for each), then drain it and return."""
    async with trio.open_nursery() as nursery:
        await nursery.start(worker.serve)
        for job in jobs:
            await broker.get_result(job.id, wait=wait)
        worker.drain()


class Countdown:
    """``finished`` is set once ``tick()`` was called ``count`` times: a handler
    ticks as each job ends, and the test serves until all have."""

    def __init__(self, count: int) -> None:
        self.left = count
        self.finished = trio.Event()

    def tick(self) -> None:
        self.left -= 1
        if self.left == 0:
            self.finished.set()
