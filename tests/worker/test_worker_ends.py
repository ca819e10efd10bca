"""A worker that ends without being drained crashed: its supervisor restarts it."""

from __future__ import annotations

import functools

import trio
import trio.testing

import guild
from guild import Job, MemoryBroker

from .._poll import until
from .._state_log import StateLog


async def _leak_a_cancellation() -> None:
    """Raise a Cancelled that belongs to a scope already gone, as a task that
    shares another task's outcome would (the @cached single-flight bug)."""
    leaked: trio.Cancelled | None = None
    with trio.CancelScope() as elsewhere:
        elsewhere.cancel()
        try:
            await trio.sleep(1)
        except trio.Cancelled as cancelled:
            leaked = cancelled
            raise
    assert leaked is not None
    raise leaked


async def test_a_worker_ended_by_a_leaked_cancellation_is_restarted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    log = StateLog()
    app = guild.Guild(
        "leaky",
        instruments=[log],
        supervision=guild.SupervisorOptions(backoff=guild.Backoff(initial=1.0, jitter=0.0)),
    )
    calls = 0

    @app.worker("q", concurrency=1, max_attempts=3)
    async def handle(job: Job) -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            await _leak_a_cancellation()
        return calls

    broker = MemoryBroker()
    await broker.enqueue([Job(queue="q", payload=i) for i in range(3)])
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
        with trio.fail_after(600):  # virtual seconds: a worker never restarted fails here
            await until(lambda: _done(broker, 3))
        assert app.supervisor is not None
        assert app.supervisor.snapshot()["q"].state == "running"
        stop.set()
    assert log.states()[:6] == [
        "starting",
        "running",
        "crashed",
        "restarting",
        "starting",
        "running",
    ]
    assert log.errors() == ["WorkerEnded: worker 'q' stopped without being drained"]
    # The job whose handler leaked went back to the queue and ran again.
    stats = (await broker.stats(["q"]))["q"]
    assert (stats.done, stats.dead, stats.ready) == (3, 0, 0)
    assert calls == 4


async def _done(broker: MemoryBroker, count: int) -> bool:
    return (await broker.stats(["q"]))["q"].done >= count
