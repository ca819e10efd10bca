"""Usage examples checked by mypy --strict only (never run): the public API types well."""

from __future__ import annotations

import trio

import guild

app = guild.Guild("typed")


@app.worker("emails", concurrency=4, timeout=5.0, max_attempts=3)
async def send(job: guild.Job) -> dict[str, str]:
    return {"sent": str(job.payload)}


async def produce(broker: guild.Broker) -> guild.Result | None:
    job: guild.Job = await app.enqueue("emails", {"to": "a@example.com"}, key="k", broker=broker)
    jobs: list[guild.Job] = await app.enqueue_many("emails", [1, 2, 3], broker=broker)
    assert len(jobs) == 3
    return await broker.get_result(job.id, wait=1.0)


async def embed() -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run, guild.MemoryBroker())
        nursery.cancel_scope.cancel()


policy: guild.RetryPolicy = guild.RetryPolicy(base=0.5, factor=3.0, max_delay=60.0, jitter=0.1)
decision: guild.RetryAt | guild.Dead = policy.decide(guild.Job(queue="q", attempt=1), 0.0, 0.5)
schedule: guild.Cron = guild.Cron("*/5 * * * *")
