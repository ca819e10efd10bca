"""Apps the CLI tests run in real `guild run` processes."""

from __future__ import annotations

import os

import trio

import guild

slow = guild.Guild("slow")


@slow.worker("work", concurrency=20, lease=2.0, timeout=30, graceful_timeout=20)
async def work(job: guild.Job) -> dict[str, object]:
    # Long enough that a kill lands mid-run with jobs in flight.
    await trio.sleep(float(os.environ.get("GUILD_TEST_JOB_SECONDS", "0.02")))
    return {"n": job.payload, "pid": os.getpid()}


quick = guild.Guild("quick")


@quick.worker("quick", concurrency=4)
async def echo(job: guild.Job) -> object:
    return job.payload


not_an_app = 42


doomed = guild.Guild(
    "doomed",
    supervision=guild.SupervisorOptions(
        max_restarts=2, period=60.0, backoff=guild.Backoff(initial=0.01, jitter=0.0)
    ),
)


@doomed.worker("doomed", dependency_threshold=1, max_attempts=100)
async def always_down(job: guild.Job) -> None:
    # Every job finds its dependency down: the worker crashes until the supervisor gives up.
    raise guild.DependencyFailure("the database is gone")
