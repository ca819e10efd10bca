"""The app of the `guild run --processes 2 --http` tests (imported by each child).

``work`` sleeps ``$GUILD_TEST_JOB_SECONDS`` (default 0.05) so that both children
get some of a batch; a payload of ``"fail"`` raises, and with ``max_attempts=1``
goes to the dead letters.
"""

from __future__ import annotations

import os

import trio

import guild

app = guild.Guild("fleet")


@app.worker("work", concurrency=2)
async def work(job: guild.Job) -> str:
    await trio.sleep(float(os.environ.get("GUILD_TEST_JOB_SECONDS", "0.05")))
    if job.payload == "fail":
        raise ValueError("asked to fail")
    return f"pid {os.getpid()}"
