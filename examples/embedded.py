"""Embedding: guild's workers inside your own Trio program, sharing its nursery.

The app runs in a nursery the program owns; the program enqueues work and waits
for results while the workers run beside its own tasks. Leaving the nursery
drains the app: running jobs finish, nothing is left claimed.

    python examples/embedded.py
"""

from __future__ import annotations

import functools

import trio

import guild

app = guild.Guild("embedded")


@app.worker("thumbnails", concurrency=4, timeout=5.0)
async def thumbnail(job: guild.Job) -> str:
    await trio.sleep(0.01)  # stands in for real I/O
    return f"thumb-{job.payload['image']}"


async def main() -> None:
    broker = guild.MemoryBroker()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        # Started: returns once every worker is claiming.
        await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
        jobs = [await app.enqueue("thumbnails", {"image": f"img{i}.png"}) for i in range(10)]
        for job in jobs:
            result = await app.result(job, wait=5)
            assert result is not None
            print(f"{job.payload['image']} -> {result.value}")
        stop.set()  # drain and return
    print("app drained:", await broker.stats())


if __name__ == "__main__":
    trio.run(main)
