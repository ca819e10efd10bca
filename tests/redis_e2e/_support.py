"""Helpers the Redis end-to-end tests share: broker polling and a supervision log."""

from __future__ import annotations

import collections
from collections.abc import Sequence

import trio

import guild

from .._state_log import StateLog

QUEUE = "work"


async def enqueue_batched(
    broker: guild.Broker, payloads: Sequence[int], *, batch: int = 1000, max_attempts: int = 5
) -> list[guild.Job]:
    """Enqueue one job per payload on ``QUEUE``, ``batch`` jobs per broker call."""
    jobs: list[guild.Job] = []
    for start in range(0, len(payloads), batch):
        chunk = payloads[start : start + batch]
        jobs += await broker.enqueue(
            [guild.Job(queue=QUEUE, payload=n, max_attempts=max_attempts) for n in chunk]
        )
    return jobs


async def queue_stats(broker: guild.Broker) -> guild.QueueStats:
    """``QUEUE``'s counts; while Redis is unreachable, asks again until it answers."""
    while True:
        try:
            return (await broker.stats([QUEUE]))[QUEUE]
        except guild.BrokerUnavailable:
            await trio.sleep(0.05)


async def wait_for_done(broker: guild.Broker, at_least: int) -> guild.QueueStats:
    """Poll until ``done`` reaches ``at_least``; the caller bounds it with ``fail_after``."""
    while True:
        stats = await queue_stats(broker)
        if stats.done >= at_least:
            return stats
        await trio.sleep(0.05)


async def check_doubled(broker: guild.Broker, jobs: Sequence[guild.Job]) -> None:
    """Each of ``jobs`` is done with its payload doubled as its result, and
    ``QUEUE`` holds nothing else: none ready, in flight or dead."""
    stats = await queue_stats(broker)
    assert (stats.done, stats.ready, stats.in_flight, stats.dead) == (len(jobs), 0, 0, 0)
    for job in jobs:
        result = await broker.get_result(job.id)
        assert result is not None and result.value == job.payload * 2


async def results(broker: guild.Broker, jobs: Sequence[guild.Job]) -> list[guild.Result | None]:
    """Every job's result, in order."""
    return [await broker.get_result(job.id) for job in jobs]


# One restart allowed: a fault that crashed a worker (or any loop of the app)
# instead of being waited out would spend it at once.
TIGHT = guild.SupervisorOptions(
    max_restarts=1, period=600.0, backoff=guild.Backoff(initial=0.05, maximum=0.05)
)


class FourHeld:
    """An app on ``QUEUE`` whose jobs 0 to 3 run until ``finish`` is set, so a
    fault can land while four jobs are held and their acks must wait it out.

    The lease is far longer than any test: a dropped ack shows as a job that
    never finishes, a crash as a job run twice (``runs``)."""

    def __init__(self, name: str) -> None:
        self.log = StateLog()
        self.app = guild.Guild(name, instruments=[self.log], supervision=TIGHT)
        self.runs: collections.Counter[int] = collections.Counter()
        self.started = 0
        self.finish = trio.Event()

        @self.app.worker(QUEUE, concurrency=4, lease=120.0, timeout=None)
        async def work(job: guild.Job) -> object:
            self.runs[job.payload] += 1
            self.started += 1
            if job.payload < 4:
                await self.finish.wait()
            return job.payload * 2

    def check_clean(self, count: int) -> None:
        """Each of jobs 0..count-1 ran exactly once, and nothing crashed or gave up."""
        assert self.runs == collections.Counter(range(count)), "a job ran twice or never"
        assert self.log.count("crashed") == 0, self.log.errors()
        assert self.log.count("gave_up") == 0
