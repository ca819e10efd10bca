"""`app.run` raises GaveUp itself, not inside an exception group, as documented."""

from __future__ import annotations

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker


async def test_a_crash_loop_ends_app_run_with_a_bare_gave_up(
    autojump_clock: trio.testing.MockClock,
) -> None:
    app = guild.Guild(
        "looping",
        supervision=guild.SupervisorOptions(
            max_restarts=2, period=60.0, backoff=guild.Backoff(initial=0.1, maximum=0.1)
        ),
    )

    # Every job is a dependency failure, and one in a row is a streak: each job
    # crashes the worker, so the third crash within the period exceeds intensity.
    @app.worker("q", dependency_threshold=1, max_attempts=100)
    async def handle(job: Job) -> None:
        raise guild.DependencyFailure("the dependency is down")

    broker = MemoryBroker()
    await broker.enqueue([Job(queue="q", payload=n) for n in range(10)])
    caught: guild.GaveUp | None = None
    try:
        await app.run(broker)
    except guild.GaveUp as exc:  # a group here would escape this clause
        caught = exc
    assert caught is not None
    assert caught.supervisor == "looping"
