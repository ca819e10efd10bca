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


scheduled = guild.Guild("scheduled")


@scheduled.worker("reports", concurrency=3)
async def report(job: guild.Job) -> None:
    return None


@scheduled.worker("mail", name="mailer", concurrency=2)
async def mail(job: guild.Job) -> None:
    return None


scheduled.periodic(3600, "reports", name="hourly-report")
# No worker of this app takes from "cleanup": `guild run` warns at start.
scheduled.periodic("0 3 * * *", "cleanup", name="nightly-cleanup")


class Runner:
    """A handler that runs commands in a sandbox (as guild_workers' task worker does)."""

    def __init__(self, sandbox: guild.Sandbox) -> None:
        self.sandbox = sandbox

    async def handle(self, job: guild.Job) -> None:
        return None


sandboxed = guild.Guild("sandboxed")
sandboxed.add_worker(
    guild.WorkerSpec(
        queue="commands",
        handler=Runner(
            guild.Sandbox(guild.SandboxPolicy(isolate="never", allow=("python3",)))
        ).handle,
    )
)
