"""End to end through the app: supervisor, workers, memory broker and the real server."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import guild
from guild import Job, MemoryBroker
from guild.observability import observe, serve_http
from guild.supervision import Circuit

from .helpers import eventually


@pytest.fixture
async def broker() -> AsyncIterator[MemoryBroker]:
    opened = MemoryBroker()
    yield opened
    await opened.aclose()


async def _serve(app: guild.Guild, broker: MemoryBroker, nursery: trio.Nursery) -> str:
    observe(app, logs=False)  # before run: the workers' first states are seen
    stop = trio.Event()
    await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
    port = await nursery.start(functools.partial(serve_http, app, port=0))
    return f"http://127.0.0.1:{port}"


class TestThroughTheApp:
    """What the supervisor and the workers emit reaches /health and /metrics."""

    async def test_jobs_and_states_are_reported(
        self, broker: MemoryBroker, nursery: trio.Nursery
    ) -> None:
        app = guild.Guild("shop")

        @app.worker("emails", concurrency=4, max_attempts=1)
        async def send(job: Job) -> None:
            if job.payload == "bad":
                raise ValueError("bad address")

        with trio.fail_after(30):
            url = await _serve(app, broker, nursery)
            await app.enqueue_many("emails", ["ok"] * 60 + ["bad"])

            async def counted() -> dict[tuple[str, str], float]:
                async with httpx.AsyncClient() as client:
                    text = (await client.get(url + "/metrics")).text
                return {
                    (s.name, s.labels.get("state", "")): s.value
                    for family in text_string_to_metric_families(text)
                    for s in family.samples
                    if s.labels.get("worker") == "emails"
                }

            found = await counted()
            while found.get(("guild_jobs_dead_total", "")) != 1:
                await trio.sleep(0.05)
                found = await counted()
            async with httpx.AsyncClient() as client:
                health = await client.get(url + "/health")
        assert found[("guild_jobs_processed_total", "")] == 60
        assert found[("guild_worker_state", "running")] == 1
        assert health.status_code == 200
        body = health.json()
        assert body["status"] == "degraded"
        assert body["workers"]["emails"]["state"] == "running"

    async def test_an_open_circuit_makes_health_503(
        self, broker: MemoryBroker, nursery: trio.Nursery
    ) -> None:
        app = guild.Guild("shop")

        @app.worker(
            "smtp",
            dependency_errors=[ConnectionError],
            dependency_threshold=1,
            circuit=Circuit(threshold=1, window=60, cooldown=600),
        )
        async def send(job: Job) -> None:
            raise ConnectionRefusedError("smtp is down")

        with trio.fail_after(30):
            url = await _serve(app, broker, nursery)
            await app.enqueue("smtp", "hello")
            await eventually(lambda: _open(app))
            async with httpx.AsyncClient() as client:
                health = await client.get(url + "/health")
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "unhealthy"
        assert body["workers"]["smtp"]["state"] == "open"
        assert body["checks"]["worker:smtp:state"]["status"] == "unhealthy"


def _open(app: guild.Guild) -> bool:
    """Whether the monitor has heard that the smtp worker's circuit opened."""
    return observe(app).monitor.states().get("smtp", ("", ""))[1] == "open"
