"""What /health says when the broker goes wrong: a SQLite file deleted under a running app.

Run: python examples/broker_health_demo.py

The app serves a queue from a SQLite file; the file is deleted while it runs.
The broker notices at the next health check (device + inode), /health turns
unhealthy naming the path, every call refuses with BrokerFileReplaced, and the
supervisor gives up: a process manager would restart guild on the file now at
the path.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import trio

import guild
from guild.observability import ObservabilityApp, observe


def _first(error: BaseException) -> BaseException:
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


async def main() -> None:
    app = guild.Guild(
        "demo",
        supervision=guild.SupervisorOptions(
            max_restarts=2, period=60.0, backoff=guild.Backoff(initial=0.05, maximum=0.05)
        ),
    )

    @app.worker("reports", claim_wait=0.1)
    async def build(job: guild.Job) -> object:
        return f"report {job.payload}"

    health = ObservabilityApp(app, observe(app, logs=False))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "jobs.db"
        async with guild.open_broker(f"sqlite:{path}") as broker:
            job = await broker.enqueue([guild.Job(queue="reports", payload=1)])
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(app.run, broker)
                    result = await broker.get_result(job[0].id, wait=10.0)
                    print("result:", None if result is None else result.value)
                    verdict, _ = await health.health()
                    print(f"health: {verdict.status.value} (HTTP {verdict.http_status})")
                    os.unlink(path)
                    verdict, _ = await health.health()
                    check = next(c for c in verdict.checks if c.name == "broker")
                    status = f"{verdict.status.value} (HTTP {verdict.http_status})"
                    print(f"after deleting the file: {status}")
                    print(f"  broker check: {check.detail}")
            except* guild.GaveUp as stopped:
                print(f"guild stopped: {_first(stopped)}")


if __name__ == "__main__":
    trio.run(main)
