"""Apps the attempt-accounting tests run in real `guild run` processes."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import trio

import guild

poison = guild.Guild("poison")


# One handler and four prefetched jobs: whatever was claimed with the poison job
# is held, never started, when the process dies. No max_attempts on the jobs
# (the CLI enqueues them): the worker's 3 applies.
@poison.worker("poison", concurrency=1, prefetch=4, lease=1.0, max_attempts=3, timeout=30)
async def poison_or_echo(job: guild.Job) -> object:
    if job.payload == "poison":
        os.kill(os.getpid(), signal.SIGKILL)
    return job.payload


crowd = guild.Guild("crowd")


# Four handlers: the jobs claimed and started beside the poison job the first
# time are charged for that run (it was theirs too); after that the poison job,
# interrupted, runs alone.
#
# An innocent job takes half a second, and the poison job dies once three of them
# run beside it (or after 0.2 s, alone): so no innocent job finishes, its ack still
# on the way, and is followed by another before the death. Those would be charged
# for it too, rightly, but then how many pay would depend on the scheduler.
_crowd_running = 0
_crowd_of_three = trio.Event()


@crowd.worker("poison", concurrency=4, lease=1.0, max_attempts=3, timeout=30)
async def poison_in_a_crowd(job: guild.Job) -> object:
    global _crowd_running
    if job.payload == "poison":
        with trio.move_on_after(0.2):
            await _crowd_of_three.wait()
        os.kill(os.getpid(), signal.SIGKILL)
    _crowd_running += 1
    if _crowd_running >= 3:
        _crowd_of_three.set()
    try:
        await trio.sleep(0.5)
    finally:
        _crowd_running -= 1
    return job.payload


flaky = guild.Guild("flaky")


@flaky.worker(
    "flaky", concurrency=1, max_attempts=3, retry=guild.RetryPolicy(base=0.01, jitter=0.0)
)
async def always_fails(job: guild.Job) -> None:
    raise RuntimeError(f"attempt {job.attempt} failed")


stuck = guild.Guild("stuck")


# A drain would give these jobs a minute; `guild run --grace` kills the process
# long before. Each run leaves a file named after its job, to say it began.
@stuck.worker("stuck", concurrency=4, prefetch=0, lease=120.0, graceful_timeout=60.0)
async def hang(job: guild.Job) -> None:
    (Path(os.environ["GUILD_TEST_STARTED_DIR"]) / job.id).touch()
    await trio.sleep_forever()
