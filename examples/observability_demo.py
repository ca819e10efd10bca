"""Watch an app: JSON logs, /health, /metrics and /events from a real HTTP server.

    python examples/observability_demo.py

One worker sends 100 "emails"; every twentieth fails for good (5 % > the 1 %
threshold), so /health says degraded. The script follows the jobs on the
/events websocket, then reads /health and /metrics as `guild status` and
Prometheus would. The failures' log lines (JSON, one per line) go to stderr.
"""

from __future__ import annotations

import functools
import json
import sys

import httpx
import trio
import trio_websocket

import guild
from guild.observability import configure_logging, serve_http

app = guild.Guild("demo")


@app.worker("emails", concurrency=8, max_attempts=1)
async def send(job: guild.Job) -> str:
    if job.payload % 20 == 0:
        raise ConnectionRefusedError("smtp refused the message")
    await trio.sleep(0.001)
    return f"sent {job.payload}"


async def follow(ws: trio_websocket.WebSocketConnection, jobs: int) -> int:
    """Read /events until ``jobs`` jobs finished; return how many failed."""
    finished = failed = 0
    while finished < jobs:
        for event in json.loads(await ws.get_message()):
            if event["type"] == "job_finished":
                finished += 1
                failed += event["outcome"] != "done"
    return failed


async def main() -> None:
    configure_logging(json=True, level="info", stream=sys.stderr)
    broker = guild.MemoryBroker()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, app, port=0))
        async with (
            app.open(broker),
            trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/events") as ws,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
        ):
            (hello,) = json.loads(await ws.get_message())
            print(f"watching {hello['app']}: workers {sorted(hello['workers'])}")
            await app.enqueue_many("emails", list(range(100)))
            print(f"/events: 100 jobs finished, {await follow(ws, 100)} failed")
            health = await client.get("/health")
            emails = health.json()["workers"]["emails"]
            print(f"health: {health.json()['status']} (HTTP {health.status_code})")
            print(f"emails: {emails['processed']} done, {emails['error_rate']:.0%} errors")
            metrics = (await client.get("/metrics")).text
            for line in metrics.splitlines():
                if line.startswith(("guild_jobs_processed_total", "guild_jobs_dead_total")):
                    print(line)
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
