"""Version 2 of the orders worker, the canary: healthy, or bad as ``CANARY_DEMO`` says.

``CANARY_DEMO=errors`` fails one attempt in five (20 % errors); ``CANARY_DEMO=slow``
takes a second a job (p95 above a 0.5 s bound).
"""

from __future__ import annotations

import os
import random

import trio

import guild

app = guild.Guild("orders-v2")
MODE = os.environ.get("CANARY_DEMO", "healthy")


@app.worker("orders", concurrency=32, retry=guild.RetryPolicy(base=0.05, max_delay=0.2))
async def handle(job: guild.Job) -> dict[str, object]:
    if MODE == "errors" and random.random() < 0.2:
        raise RuntimeError("v2 cannot price this order")
    await trio.sleep(1.0 if MODE == "slow" else 0.01)
    return {"version": "v2", "n": job.payload["n"]}
