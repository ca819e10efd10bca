"""Cancelling jobs: a waiting one never runs, a running one is stopped within a second.

A report job runs a real ``sleep 30`` in guild's sandbox; cancelling it cancels the
handler's scope on the worker, the sandbox kills the process, and the job ends
``cancelled``. A delayed job cancelled before its time never runs at all. The
same works across processes on SQLite and Redis (``guild job cancel ID``).

    python examples/cancel_demo.py
"""

from __future__ import annotations

import time

import trio

import guild
from guild.sandbox import Sandbox, SandboxPolicy

app = guild.Guild("cancels")
started = trio.Event()
ran: list[str] = []


def _sandbox() -> Sandbox:
    # Namespaces where the host has them; a plain process group where it has not.
    try:
        return Sandbox(SandboxPolicy(allow=("sleep",), kill_grace=0.2))
    except guild.IsolationUnavailable:
        return Sandbox(SandboxPolicy(allow=("sleep",), kill_grace=0.2, isolate="never"))


sandbox = _sandbox()


@app.worker("reports", timeout=120)
async def report(job: guild.Job) -> str:
    ran.append(job.payload["name"])
    started.set()
    await sandbox.run(["sleep", "30"], timeout=60)  # stands in for a long report
    return "report written"


async def main() -> None:
    async with app.open(guild.MemoryBroker()):
        later = await app.enqueue("reports", {"name": "tomorrow"}, delay=3600)
        print("delayed job cancelled:", await app.cancel(later))

        long = await app.enqueue("reports", {"name": "yearly"})
        await started.wait()
        asked = time.monotonic()
        print("running job cancel requested:", await app.cancel(long))
        result = await app.result(long, wait=10)
        assert result is not None
        took = time.monotonic() - asked
        print(f"yearly report: {result.status.value} ({result.error}) after {took:.1f}s")
        print("cancelling it again:", await app.cancel(long))
    print("handlers that ran:", ran)


if __name__ == "__main__":
    trio.run(main)
