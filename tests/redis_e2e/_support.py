"""Helpers the Redis end-to-end tests share: broker polling and a supervision log."""

from __future__ import annotations

from collections.abc import Sequence

import trio

import guild

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


async def results(broker: guild.Broker, jobs: Sequence[guild.Job]) -> list[guild.Result | None]:
    """Every job's result, in order."""
    return [await broker.get_result(job.id) for job in jobs]
