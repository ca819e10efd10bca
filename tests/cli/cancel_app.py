"""An app for tests/cli/test_cancel_process.py: a job that sleeps until cancelled."""

from __future__ import annotations

import os
from pathlib import Path

import trio

import guild

app = guild.Guild("sleepy")


@app.worker("sleepy", concurrency=2, timeout=300, graceful_timeout=0.5)
async def sleepy(job: guild.Job) -> str:
    marks = Path(os.environ["GUILD_TEST_MARKS"])
    (marks / f"{job.id}.started").touch()
    try:
        await trio.sleep(job.payload)
    except trio.Cancelled:
        (marks / f"{job.id}.cancelled").touch()
        raise
    return "slept"
