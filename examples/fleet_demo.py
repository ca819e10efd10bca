"""One view of a `guild run --processes 2`: the parent answers for every process.

    python examples/fleet_demo.py

Starts `guild run fleet_demo:app --processes 2 --http ...` as a real process,
enqueues 40 jobs (one fails for good), and reads the parent's /health: the
run's totals, each process's share, and the true p50/p95/p99 of every job's
duration, whichever child ran it. Then it stops the run with SIGTERM.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx
import trio

import guild

app = guild.Guild("fleet-demo")


@app.worker("work", concurrency=2, max_attempts=1)
async def work(job: guild.Job) -> None:
    if job.payload == "fail":
        raise ValueError("asked to fail")
    await trio.sleep(0.02 + job.payload % 5 / 100)  # 20 to 60 ms


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(url: str, port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "guild", "run", "fleet_demo:app", "--broker", url]
    argv += ["--processes", "2", "--http", f"127.0.0.1:{port}", "--log-level", "warning"]
    # From this file's directory, so that `fleet_demo:app` imports.
    return subprocess.Popen(argv, cwd=Path(__file__).parent, stderr=subprocess.DEVNULL)


async def health(base: str) -> dict[str, Any] | None:
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            body: dict[str, Any] = (await client.get(base + "/health")).json()
            return body
    except httpx.HTTPError:
        return None


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/fleet.db"
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        run = start(url, port)
        try:
            with trio.fail_after(60):
                await demo(url, base)
        finally:
            run.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(run.wait)
        print(f"the run drained: exit code {code}")


async def demo(url: str, base: str) -> None:
    body = await health(base)
    while body is None or any(p["status"] is None for p in body["processes"].values()):
        await trio.sleep(0.1)
        body = await health(base)
    async with guild.open_broker(url) as broker:
        jobs = [guild.Job(queue="work", payload=i) for i in range(40)]
        await broker.enqueue([*jobs, guild.Job(queue="work", payload="fail")])
        while True:
            stats = (await broker.stats(["work"]))["work"]
            if stats.done == 40 and stats.dead == 1:
                break
            await trio.sleep(0.05)
    body = await health(base)
    assert body is not None
    totals = body["totals"]
    processes = body["processes"]
    shares = " + ".join(str(p["totals"]["processed"]) for p in processes.values())
    print(f"health: {body['status']}, {len(processes)} processes up")
    print(f"run processed {totals['processed']} = {shares}")
    worker = body["workers"]["work"]
    print("p50/p95/p99: " + " / ".join(f"{worker[q] * 1000:.0f}ms" for q in ("p50", "p95", "p99")))
    print(f"dead: {totals['dead']}; last failure: {body['failures'][0]['error']}")


if __name__ == "__main__":
    os.environ.pop("GUILD_BROKER", None)
    trio.run(main)
