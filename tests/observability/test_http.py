"""The HTTP server for real: hypercorn on port 0, httpx and trio-websocket as clients."""

from __future__ import annotations

import json
import socket

import httpx
import trio
import trio.lowlevel
import trio.testing
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families

from guild import Job
from guild.observability import JobStarted, Outcome

from .conftest import Served
from .helpers import eventually, finished, state


async def _get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


class TestHealth:
    """/health answers healthy, degraded (200) or unhealthy (503) with its reasons."""

    async def test_healthy_then_degraded_by_error_rate(self, served: Served) -> None:
        with trio.fail_after(10):
            emit = served.app.instruments.emit
            for _ in range(99):
                emit("job_finished", finished("emails"))
            emit("job_finished", finished("emails", Outcome.DEAD))  # 1 of 100: not above 1 %
            response = await _get(served.url + "/health")
            assert response.status_code == 200
            assert response.json()["status"] == "healthy"
            emit("job_finished", finished("emails", Outcome.RETRY))  # 2 of 101: above
            response = await _get(served.url + "/health")
        body = response.json()
        assert response.status_code == 200
        assert body["status"] == "degraded"
        assert body["checks"]["worker:emails:error_rate"]["status"] == "degraded"
        assert body["workers"]["emails"]["processed"] == 99
        assert body["workers"]["emails"]["failed"] == 2

    async def test_unhealthy_503_when_a_circuit_opens(self, served: Served) -> None:
        with trio.fail_after(10):
            served.app.instruments.emit("worker_state_changed", state("emails", "running"))
            assert (await _get(served.url + "/health")).status_code == 200
            served.app.instruments.emit(
                "worker_state_changed",
                state("emails", "open", error="DependencyFailure: smtp down"),
            )
            response = await _get(served.url + "/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "unhealthy"
        assert body["workers"]["emails"]["state"] == "open"
        assert "smtp down" in body["checks"]["worker:emails:state"]["detail"]

    async def test_unhealthy_when_the_broker_is_gone(self, served: Served) -> None:
        with trio.fail_after(10):
            await served.broker.aclose()
            response = await _get(served.url + "/health")
        assert response.status_code == 503
        assert response.json()["checks"]["broker"]["value"] == "unreachable"

    async def test_unknown_paths_and_methods(self, served: Served) -> None:
        with trio.fail_after(10):
            async with httpx.AsyncClient(base_url=served.url) as client:
                assert (await client.get("/nope")).status_code == 404
                assert (await client.post("/health")).status_code == 405
                assert (await client.head("/metrics")).content == b""


class TestMetricsEndpoint:
    """/metrics parses as Prometheus text and its counters match the jobs."""

    async def test_counters_match_and_queue_depth_is_read_at_scrape(self, served: Served) -> None:
        with trio.fail_after(10):
            await served.broker.enqueue([Job(queue="emails", payload=i) for i in range(5)])
            for _ in range(7):
                served.app.instruments.emit("job_finished", finished("emails"))
            served.app.instruments.emit("job_finished", finished("emails", Outcome.DEAD))
            response = await _get(served.url + "/metrics")
        assert response.headers["content-type"].startswith("text/plain")
        found = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }
        labels = (("app", "shop"), ("worker", "emails"))
        assert found[("guild_jobs_processed_total", labels)] == 7
        assert found[("guild_jobs_dead_total", labels)] == 1
        ready = (("app", "shop"), ("queue", "emails"), ("status", "ready"))
        assert found[("guild_queue_jobs", ready)] == 5
        assert found[("guild_broker_up", (("app", "shop"),))] == 1


async def _events(ws: trio_websocket.WebSocketConnection, count: int) -> list[dict[str, object]]:
    """Read ``count`` events (messages are JSON arrays of events)."""
    events: list[dict[str, object]] = []
    while len(events) < count:
        events.extend(json.loads(await ws.get_message()))
    return events


def _started(n: int) -> JobStarted:
    return JobStarted(
        worker="emails", job=Job(queue="emails", payload=n, id=f"job-{n:04d}"), at=0.0
    )


class TestEventsEndpoint:
    """/events streams a hello, then every event in order; slow clients are dropped."""

    async def test_a_client_receives_events_in_order(self, served: Served) -> None:
        with trio.fail_after(10):
            served.app.instruments.emit("worker_state_changed", state("emails", "running"))
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{served.port}/events"
            ) as ws:
                (hello,) = json.loads(await ws.get_message())
                assert hello["type"] == "hello"
                assert hello["workers"]["emails"]["state"] == "running"
                for n in range(40):
                    served.app.instruments.emit("job_started", _started(n))
                    served.app.instruments.emit(
                        "job_finished", finished("emails", job=_started(n).job)
                    )
                    await trio.lowlevel.checkpoint()
                received = await _events(ws, 80)
        assert [(m["type"], m["task_id"]) for m in received] == [
            (kind, f"job-{n:04d}") for n in range(40) for kind in ("job_started", "job_finished")
        ]
        assert received[1]["outcome"] == "done"

    async def test_the_hub_listens_only_while_someone_watches(self, served: Served) -> None:
        with trio.fail_after(10):
            assert not served.app.instruments.wants("job_started")
            async with trio_websocket.open_websocket_url(
                f"ws://127.0.0.1:{served.port}/events"
            ) as ws:
                await ws.get_message()
                assert served.app.instruments.wants("job_started")
            await eventually(lambda: not served.observability.hub.statistics().subscribers)
            assert not served.app.instruments.wants("job_started")

    async def test_a_stuck_client_is_dropped_and_never_blocks_the_emitter(
        self, served: Served, nursery: trio.Nursery
    ) -> None:
        hub = served.observability.hub
        with trio.fail_after(30):
            sock = trio.socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            await sock.connect(("127.0.0.1", served.port))
            # This client never calls get_message: once its one-message queue
            # is full it stops reading, and TCP pushes back on the server.
            stream = trio.SocketStream(sock)
            await trio_websocket.wrap_client_stream(
                nursery, stream, "127.0.0.1", "/events", message_queue_size=1
            )
            await eventually(lambda: bool(hub.statistics().subscribers))
            emitted = 0
            while not hub.statistics().dropped:
                with trio.testing.assert_no_checkpoints():  # emitting never waits
                    for _ in range(16):
                        served.app.instruments.emit("job_finished", finished("emails"))
                        emitted += 1
                await trio.lowlevel.checkpoint()
            await trio.aclose_forcefully(stream)
        assert hub.statistics().subscribers == 0
        assert emitted > hub.buffer
