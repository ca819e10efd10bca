"""Observability of real jobs: a worker runs them, the real server reports them."""

from __future__ import annotations

import functools
import json
import socket

import httpx
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

import guild
from guild import Job, MemoryBroker, Retry
from guild.observability import observe, serve_http

from .helpers import eventually


class _Run:
    """An app whose worker handles ``ok`` (done) and ``fail`` (dead at once) payloads."""

    def __init__(self) -> None:
        self.broker = MemoryBroker()
        self.app = guild.Guild("live", broker=self.broker)
        self.handled = 0

        @self.app.worker("work", concurrency=8, max_attempts=1)
        async def work(job: Job) -> None:
            self.handled += 1
            if job.payload == "fail":
                raise ValueError("bad payload")
            if job.payload == "retry":
                raise Retry(after=60)

        self.observability = observe(self.app, logs=False)

    async def serve(self, nursery: trio.Nursery) -> int:
        worker = guild.Worker(self.app.specs["work"], self.broker, self.app.instruments)
        await nursery.start(worker.serve)
        port: int = await nursery.start(functools.partial(serve_http, self.app, port=0))
        return port

    async def run(self, payloads: list[str]) -> None:
        target = self.handled + len(payloads)
        await self.broker.enqueue([Job(queue="work", payload=p, max_attempts=1) for p in payloads])
        await eventually(lambda: self.handled >= target)


async def _settled(broker: MemoryBroker, done: int, dead: int) -> None:
    async def check() -> bool:
        stats = (await broker.stats(["work"]))["work"]
        return stats.done == done and stats.dead == dead

    for _ in iter(int, 1):
        if await check():
            return
        await trio.sleep(0.01)


class TestRealJobs:
    """Counters, health and the event feed follow jobs a real worker ran."""

    async def test_metrics_and_health_follow_real_jobs(self, nursery: trio.Nursery) -> None:
        run = _Run()
        with trio.fail_after(30):
            port = await run.serve(nursery)
            await run.run(["ok"] * 150)
            await _settled(run.broker, 150, 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                assert (await client.get("/health")).json()["status"] == "healthy"
                await run.run(["fail", "fail"])
                await _settled(run.broker, 150, 2)
                health = await client.get("/health")
                metrics = (await client.get("/metrics")).text
        assert health.status_code == 200
        assert health.json()["status"] == "degraded"
        values = {
            (s.name, s.labels.get("worker"), s.labels.get("status")): s.value
            for family in text_string_to_metric_families(metrics)
            for s in family.samples
        }
        assert values[("guild_jobs_processed_total", "work", None)] == 150
        assert values[("guild_jobs_dead_total", "work", None)] == 2
        assert values[("guild_job_duration_seconds_count", "work", None)] == 152
        assert values[("guild_queue_jobs", None, "dead")] == 2

    async def test_events_of_real_jobs_arrive_in_order(self, nursery: trio.Nursery) -> None:
        run = _Run()
        with trio.fail_after(30):
            port = await run.serve(nursery)
            async with trio_websocket.open_websocket_url(f"ws://127.0.0.1:{port}/events") as ws:
                await ws.get_message()  # hello
                await run.run(["ok"] * 20)
                events: list[dict[str, object]] = []
                while sum(e["type"] == "job_finished" for e in events) < 20:
                    events.extend(json.loads(await ws.get_message()))
        for task_id in {e["task_id"] for e in events}:
            kinds = [e["type"] for e in events if e["task_id"] == task_id]
            assert kinds == ["job_started", "job_finished"]

    async def test_a_stuck_client_does_not_stall_jobs(self, nursery: trio.Nursery) -> None:
        run = _Run()
        hub = run.observability.hub
        with trio.fail_after(60):
            port = await run.serve(nursery)
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", port))
            stream = trio.SocketStream(sock)
            await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", "/events", message_queue_size=1
            )
            await eventually(lambda: bool(hub.statistics().subscribers))
            batches = 0
            while not hub.statistics().dropped:
                await run.run(["ok"] * 2000)  # finishes although nobody reads the feed
                batches += 1
            await _settled(run.broker, 2000 * batches, 0)
            await trio.aclose_forcefully(stream)
        assert hub.statistics().subscribers == 0
