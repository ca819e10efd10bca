"""The app of the `guild run --processes 2 --http` dashboard test (imported by each child).

``hold`` (concurrency 1 a child, no prefetch) runs until the file ``$GUILD_TEST_RELEASE``
exists, so two held jobs are one in each child; ``fail`` always raises, so a
job with ``max_attempts=1`` becomes a dead letter to requeue.
"""

from __future__ import annotations

import os

import trio

import guild

app = guild.Guild("fleet-hold")


@app.worker("hold", concurrency=1, prefetch=0)
async def hold(job: guild.Job) -> str:
    release = os.environ["GUILD_TEST_RELEASE"]
    # The release comes from another process (the test): a file, polled.
    while not os.path.exists(release):  # noqa: ASYNC110
        await trio.sleep(0.05)
    return f"pid {os.getpid()}"


@app.worker("fail")
async def fail(job: guild.Job) -> None:
    raise ValueError("asked to fail")
