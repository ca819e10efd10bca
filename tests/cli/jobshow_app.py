"""An app for tests/cli/test_job_show.py: a job that reports progress, then
waits for the test to let it finish; and a job that always fails."""

from __future__ import annotations

import os
from pathlib import Path

import trio

import guild
from tests._poll import until

app = guild.Guild("jobshow")


@app.worker("steps", timeout=120, graceful_timeout=0.5)
async def steps(job: guild.Job) -> dict[str, int]:
    count = job.payload["steps"]
    for step in range(1, count + 1):
        guild.progress(step / count, f"step {step} of {count}")
        await trio.sleep(0.01)
    release = Path(os.environ["GUILD_TEST_MARKS"]) / f"{job.id}.release"
    await until(release.exists, 0.02)  # another process makes it: no event to wait on
    return {"steps": count}


def lookup(user: int) -> None:
    raise ValueError(f"no such user: {user}")


@app.worker("fails", max_attempts=2, retry=guild.RetryPolicy(base=0.05, jitter=0.0))
async def fails(job: guild.Job) -> None:
    lookup(job.payload)
