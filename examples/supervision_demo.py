"""Supervision standing in for a circuit breaker, in real time (about 3 seconds).

A worker calls a "payments API" that is down for the first second. Each call
fails with ConnectionRefusedError, which the worker declares a dependency
error: two in a row crash the worker, its supervisor restarts it with backoff,
and the third crash opens the worker's circuit. While open the worker claims
nothing (the jobs wait in the broker); after the cooldown one trial start is
let through, the API is back, the trial stays up and the circuit closes.

    python examples/supervision_demo.py
"""

from __future__ import annotations

import functools

import trio

import guild

API_DOWN_FOR = 1.0


class PrintTransitions(guild.Instrument):
    """Print each supervisor transition as it happens."""

    def __init__(self, started: float) -> None:
        self.started = started
        self.closed = trio.Event()

    def worker_state_changed(self, event: guild.observability.WorkerStateChanged) -> None:
        at = trio.current_time() - self.started
        detail = f" ({event.detail[:70]})" if event.detail else ""
        print(f"{at:5.2f}s  {event.worker}: {event.state}{detail}")
        if event.state == "closed":
            self.closed.set()


async def main() -> None:
    started = trio.current_time()
    transitions = PrintTransitions(started)
    all_paid = trio.Event()
    app = guild.Guild(
        "payments",
        instruments=[transitions],
        supervision=guild.SupervisorOptions(backoff=guild.Backoff(initial=0.05)),
    )
    paid: list[int] = []

    @app.worker(
        "charges",
        concurrency=4,
        max_attempts=50,
        retry=guild.RetryPolicy(base=0.05, max_delay=0.2),
        dependency_errors=[ConnectionRefusedError],
        dependency_threshold=2,
        circuit=guild.Circuit(threshold=3, window=10.0, cooldown=1.0, healthy_after=0.5),
    )
    async def charge(job: guild.Job) -> str:
        if trio.current_time() - started < API_DOWN_FOR:
            raise ConnectionRefusedError("payments API refused the connection")
        paid.append(job.payload["cents"])
        if len(paid) == 20:
            all_paid.set()
        return "paid"

    broker = guild.MemoryBroker()
    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
        await app.enqueue_many("charges", [{"cents": 100 * i} for i in range(1, 21)])
        await all_paid.wait()
        await transitions.closed.wait()
        assert app.supervisor is not None
        status = app.supervisor.snapshot()["charges"]
        stop.set()
    stats = (await broker.stats(["charges"]))["charges"]
    print(f"charges: {stats.done} done, {stats.dead} dead; circuit {status.state}")
    print(f"last error the supervisor saw: {status.last_error}")


if __name__ == "__main__":
    trio.run(main)
