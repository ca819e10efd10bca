"""A real redis-server taken away and brought back on the same port.

* With persistence, an outage far longer than the app's restart budget is
  waited out: nothing crashes, nothing is lost, finished jobs' acks are kept
  and flushed, and ``/health`` says why it is unhealthy meanwhile.
* Without persistence, the restart loses the queue: guild says so (a log error
  naming the queue and the count, an unhealthy ``/health`` check until
  acknowledged over HTTP) and goes on running new jobs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator

import httpx
import pytest
import structlog
import trio

import guild
from guild.brokers import BrokerIssue
from guild.brokers.redis import RedisBroker
from guild.observability import Health, ObservabilityApp, Status, observe, serve_http
from tests._redis_server import RedisServer, running_redis_server

from ..observability.helpers import eventually
from ._support import QUEUE, FourHeld, check_doubled, enqueue_batched, wait_for_done

OUTAGE = 3.0


@pytest.fixture
def aof_redis_server() -> Iterator[RedisServer]:
    with running_redis_server(appendonly=True) as server:
        yield server


@pytest.fixture
def bare_redis_server() -> Iterator[RedisServer]:
    with running_redis_server(appendonly=False) as server:
        yield server


def _checks(health: Health) -> dict[str, tuple[Status, str]]:
    return {c.name: (c.status, c.detail) for c in health.checks}


async def _enqueue_when_back(broker: guild.Broker, payloads: list[int]) -> list[guild.Job]:
    # The direct broker's connection died with the server: its first call may fail.
    for _ in iter(int, 1):
        try:
            return await enqueue_batched(broker, payloads)
        except guild.BrokerUnavailable:
            await trio.sleep(0.05)
    raise AssertionError("unreachable")


async def test_an_outage_longer_than_the_restart_budget_is_waited_out(
    aof_redis_server: RedisServer,
) -> None:
    server = aof_redis_server
    held = FourHeld("outage")
    app, finish = held.app, held.finish

    asgi = ObservabilityApp(app, observe(app, logs=False))
    with trio.fail_after(90):
        async with guild.open_broker(server.url) as direct:
            first = await enqueue_batched(direct, [0, 1, 2, 3])
            async with app.open(server.url):
                await eventually(lambda: held.started == 4)
                await trio.to_thread.run_sync(server.stop)
                finish.set()  # the four finish while Redis is away: their acks must wait
                await eventually(lambda: app.workers()[QUEUE].broker_error is not None)
                health, _ = await asgi.health()
                checks = _checks(health)
                assert health.status is Status.UNHEALTHY
                assert checks[f"worker:{QUEUE}:broker"][0] is Status.UNHEALTHY
                assert "BrokerUnavailable" in checks[f"worker:{QUEUE}:broker"][1]
                await trio.sleep(OUTAGE)
                assert app.workers()[QUEUE].held == 4, "acks were dropped during the outage"
                await trio.to_thread.run_sync(server.start)
                later = await _enqueue_when_back(direct, list(range(4, 24)))
                await wait_for_done(direct, 24)
                await eventually(lambda: app.workers()[QUEUE].broker_error is None)
                health, _ = await asgi.health()
                assert _checks(health)[f"worker:{QUEUE}:broker"][0] is Status.HEALTHY
            await check_doubled(direct, first + later)
    held.check_clean(24)


async def test_a_restart_without_persistence_is_reported_until_acknowledged(
    bare_redis_server: RedisServer,
) -> None:
    server = bare_redis_server
    app = guild.Guild("lossy")
    release = trio.Event()
    ran: list[int] = []

    @app.worker(QUEUE, concurrency=2, prefetch=0, lease=120.0, timeout=None)
    async def work(job: guild.Job) -> object:
        ran.append(job.payload)
        if job.payload < 100:
            await release.wait()
        return job.payload

    observe(app, logs=False)
    with trio.fail_after(90), structlog.testing.capture_logs() as logs:
        async with (
            guild.open_broker(server.url) as direct,
            trio.open_nursery() as nursery,
        ):
            await enqueue_batched(direct, list(range(10)))
            port = await nursery.start(functools.partial(serve_http, app, port=0))
            async with app.open(server.url), httpx.AsyncClient() as http:
                url = f"http://127.0.0.1:{port}"
                await eventually(lambda: len(ran) == 2)
                body = (await http.get(f"{url}/health")).json()
                # Known before anything is lost: no persistence is a loud warning.
                assert body["checks"]["broker:persistence"]["status"] == "degraded"
                assert body["status"] == "degraded"
                await trio.to_thread.run_sync(server.stop)
                await trio.to_thread.run_sync(server.start)  # empty: the 10 jobs are gone

                check = f"broker:data_loss:{QUEUE}"
                for _ in iter(int, 1):
                    response = await http.get(f"{url}/health")
                    if check in response.json()["checks"]:
                        break
                    await trio.sleep(0.05)
                assert response.status_code == 503
                found = response.json()["checks"][check]
                assert found["status"] == "unhealthy"
                # Counted at the last /health: 2 in flight and 8 ready, none finished.
                assert f"queue {QUEUE!r}" in found["detail"]
                assert "about 10 jobs" in found["detail"]
                # It stays until acknowledged.
                assert check in (await http.get(f"{url}/health")).json()["checks"]
                acked = await http.post(f"{url}/health/acknowledge")
                assert acked.json() == {"acknowledged": 1}
                assert check not in (await http.get(f"{url}/health")).json()["checks"]

                # New work still runs on the recreated queue.
                release.set()
                fresh = await _enqueue_when_back(direct, [100, 101, 102])
                for job in fresh:
                    result = await direct.get_result(job.id, wait=30.0)
                    assert result is not None and result.value == job.payload
            nursery.cancel_scope.cancel()
    lost = [entry for entry in logs if entry["event"] == "redis_data_lost"]
    assert [(entry["queue"], entry["lost"]) for entry in lost] == [(QUEUE, 10)]
    assert lost[0]["log_level"] == "error"


async def test_a_claim_that_finds_its_group_gone_reports_the_loss(
    bare_redis_server: RedisServer,
) -> None:
    server = bare_redis_server
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with guild.open_broker(server.url) as broker:
            assert isinstance(broker, RedisBroker)
            await enqueue_batched(broker, list(range(7)))
            taken = await broker.claim(QUEUE, consumer="c", limit=3, lease=60.0)
            assert len(taken) == 3
            assert await broker.diagnose() == [
                BrokerIssue(
                    name="persistence",
                    severity="degraded",
                    detail="Redis has no persistence (appendonly no, save ''): a restart"
                    " loses every job; set appendonly yes",
                )
            ]
            await trio.to_thread.run_sync(server.stop)
            await trio.to_thread.run_sync(server.start)
            for _ in iter(int, 1):
                try:
                    assert await broker.claim(QUEUE, consumer="c", limit=3, lease=60.0) == []
                    break
                except guild.BrokerUnavailable:
                    await trio.sleep(0.05)
            issues = {i.name: i for i in await broker.diagnose()}
            assert issues[f"data_loss:{QUEUE}"].severity == "unhealthy"
            # Counted by the first claim: 7 ready; then 3 of them in flight.
            assert (
                "about 7 jobs (7 ready, 0 delayed, 0 in flight"
                in issues[f"data_loss:{QUEUE}"].detail
            )
            assert broker.acknowledge() == 1
            assert f"data_loss:{QUEUE}" not in {i.name for i in await broker.diagnose()}
            # The queue works again.
            await enqueue_batched(broker, [99])
            (again,) = await broker.claim(QUEUE, consumer="c", limit=3, lease=60.0)
            assert again.job.payload == 99
    lost = [entry for entry in logs if entry["event"] == "redis_data_lost"]
    assert [(entry["queue"], entry["lost"], entry["how"]) for entry in lost] == [
        (QUEUE, 7, "its consumer group vanished")
    ]
