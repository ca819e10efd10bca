"""Reading a queue's counts through a broker of its own, never the client under test."""

from __future__ import annotations

import trio

import guild


def queue_stats(url: str, queue: str) -> guild.QueueStats:
    async def read() -> guild.QueueStats:
        async with guild.open_broker(url) as broker:
            return (await broker.stats([queue])).get(queue, guild.QueueStats(queue=queue))

    return trio.run(read)
