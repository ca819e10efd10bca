"""Version 1 of the orders worker: the stable version of the canary demo."""

from __future__ import annotations

import trio

import guild

app = guild.Guild("orders-v1")


@app.worker("orders", concurrency=32, retry=guild.RetryPolicy(base=0.05, max_delay=0.2))
async def handle(job: guild.Job) -> dict[str, object]:
    await trio.sleep(0.01)
    return {"version": "v1", "n": job.payload["n"]}
