"""A damaged Redis key (another program's string where guild keeps a queue's
stream) as the HTTP endpoints tell it, on a real redis-server, a real server and
a real client.

``/health`` of one process, and of a ``guild run --processes N`` parent, names the
key (the queue's ``broken``, its checks, the worker's ``broker_error``, the
schedule's ``error``) unless it redacts error texts, and then nowhere. The
worker's ``worker:<name>:broker`` check says ``damaged``, and ``unreachable`` only
when Redis is away. ``/metrics`` makes up no counts for the queue it could not
read. The key is overwritten with raw Redis commands, as another program would;
the expected texts are written out here.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
import trio

import guild
from guild import Job
from guild.observability import ObservabilityApp, Status, observe, serve_http
from guild.observability._access import Access
from guild.observability._fleet_http import Fleet, FleetApp, serve_fleet_http
from guild.observability._health import Snapshot, Thresholds, WorkerView, assess
from tests._poll import until
from tests._redis_server import RedisServer, redis_command, running_redis_server

KEY = "guild:q:bad:ready"
READY_IS_A_STRING = (
    f"the key {KEY} holds a string, not a stream (another program's key under guild's prefix?)"
)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    # One server a test: each overwrites a key under the default prefix.
    with running_redis_server() as server:
        yield server


def _app(name: str) -> guild.Guild:
    """Workers on ``bad`` and ``good``, a schedule on ``bad``; a supervisor that
    gives up at the second crash within a minute (a damaged key is waited out)."""
    app = guild.Guild(
        name,
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=60.0, backoff=guild.Backoff(initial=0.01, maximum=0.01)
        ),
    )
    app.periodic(0.2, "bad", "tick", name="bad-ticks")

    @app.worker("bad", claim_wait=0.2)
    async def bad(job: Job) -> None:
        return None

    @app.worker("good", claim_wait=0.2)
    async def good(job: Job) -> None:
        return None

    return app


async def _damage(server: RedisServer) -> None:
    async with guild.open_broker(server.url) as broker:
        await broker.enqueue([Job(queue="bad", payload=1), Job(queue="good", payload=2)])
    assert redis_command(server, "DEL", KEY) == b":1\r\n"
    assert redis_command(server, "SET", KEY, "junk") == b"+OK\r\n"


async def _failing(app: guild.Guild) -> None:
    """Until the worker on ``bad`` and the schedule on it report the key."""
    await until(lambda: app.workers()["bad"].broker_error is not None)
    await until(lambda: any(p.get("error") for p in app.upcoming()))
    await until(lambda: app.workers()["good"].done == 1)


async def _read(port: int) -> tuple[httpx.Response, str]:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        health = await client.get("/health")
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    return health, metrics.text


def _check_health(response: httpx.Response, redacted: bool) -> dict[str, Any]:
    assert response.status_code == 503  # the worker on 'bad' claims nothing
    body: dict[str, Any] = response.json()
    checks = body["checks"]
    (ticks,) = (p for p in body["periodic"] if p["name"] == "bad-ticks")
    shown = [
        body["queues"]["bad"]["broken"],
        checks["queue:bad:length"]["detail"],
        checks["worker:bad:broker"]["detail"],
        body["workers"]["bad"]["broker_error"],
        ticks["error"],
    ]
    if redacted:
        assert KEY not in response.text
        assert shown == ["redacted"] * 5
    else:
        assert shown[:2] == [READY_IS_A_STRING] * 2
        assert all(READY_IS_A_STRING in text for text in shown[2:]), shown
    assert (checks["worker:bad:broker"]["status"], checks["worker:bad:broker"]["value"]) == (
        "unhealthy",
        "damaged",
    )
    assert checks["worker:good:broker"] == {
        "status": "healthy",
        "value": "reachable",
        "limit": None,
        "detail": "",
    }
    assert checks["queue:bad:length"]["status"] == "degraded"
    assert body["queues"]["good"]["done"] == 1  # the other queue is counted
    return body


def _no_made_up_counts(metrics: str) -> None:
    assert KEY not in metrics  # no label carries an error text
    series = [line for line in metrics.splitlines() if line.startswith("guild_queue_jobs{")]
    assert [line for line in series if 'queue="good"' in line and 'status="ready"' in line]
    assert not [line for line in series if 'queue="bad"' in line], series


@pytest.mark.parametrize("redacted", [True, False], ids=["redacted", "plain"])
async def test_health_names_the_damaged_key_unless_it_redacts(
    redis_server: RedisServer, redacted: bool
) -> None:
    app = _app("damaged-health")
    with trio.fail_after(60), structlog.testing.capture_logs():
        await _damage(redis_server)
        async with trio.open_nursery() as nursery, app.open(redis_server.url):
            serve = functools.partial(serve_http, app, port=0, redact_errors=redacted)
            port = await nursery.start(serve)
            await _failing(app)
            health, metrics = await _read(port)
            nursery.cancel_scope.cancel()
    _check_health(health, redacted)
    _no_made_up_counts(metrics)


@pytest.mark.parametrize("redacted", [True, False], ids=["redacted", "plain"])
async def test_a_processes_parent_names_the_damaged_key_unless_it_redacts(
    redis_server: RedisServer, redacted: bool
) -> None:
    # The parent's one child is this process's app, serving its private socket as
    # a child of `guild run --processes 1` does (same redaction setting).
    directory = tempfile.mkdtemp(prefix="guild-fleet-")  # short: a Unix socket's path
    app = _app("damaged-fleet")
    try:
        fleet = Fleet(1, directory)
        with trio.fail_after(60), structlog.testing.capture_logs():
            await _damage(redis_server)
            async with (
                guild.open_broker(redis_server.url) as parent_broker,
                trio.open_nursery() as nursery,
                app.open(redis_server.url),
            ):
                child = functools.partial(
                    serve_http, app, path=fleet.socket(0), redact_errors=redacted
                )
                await nursery.start(child)
                fleet.started(0, os.getpid())
                parent = FleetApp(
                    "damaged-fleet",
                    fleet,
                    parent_broker,
                    host="127.0.0.1",
                    access=Access(token=None, loopback=True),
                    redact=redacted,
                )
                serve = functools.partial(serve_fleet_http, parent, host="127.0.0.1", port=0)
                port = await nursery.start(serve)
                await _failing(app)
                health, metrics = await _read(port)
                nursery.cancel_scope.cancel()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    body = _check_health(health, redacted)
    own = body["processes"]["0"]["workers"]["bad"]["broker_error"]
    if redacted:
        assert own == "redacted"
    else:
        assert READY_IS_A_STRING in own
    _no_made_up_counts(metrics)


async def test_the_worker_broker_check_says_unreachable_only_while_redis_is_away(
    redis_server: RedisServer,
) -> None:
    app = guild.Guild("away-health")

    @app.worker("good", claim_wait=0.2)
    async def good(job: Job) -> None:
        return None

    site = ObservabilityApp(app, observe(app, logs=False), broker_timeout=1.0)

    async def check() -> tuple[Status, object]:
        health, _ = await site.health()
        (found,) = (c for c in health.checks if c.name == "worker:good:broker")
        return found.status, found.value

    with trio.fail_after(60), structlog.testing.capture_logs():
        async with app.open(redis_server.url):
            await until(lambda: "good" in app.workers())
            assert await check() == (Status.HEALTHY, "reachable")
            redis_server.stop()
            await until(lambda: app.workers()["good"].broker_error is not None)
            assert not app.workers()["good"].broker_damaged
            assert await check() == (Status.UNHEALTHY, "unreachable")
            redis_server.start()
            await until(lambda: app.workers()["good"].broker_error is None)
            assert await check() == (Status.HEALTHY, "reachable")


def test_the_verdict_says_damaged_for_a_damaged_record_and_unreachable_otherwise() -> None:
    def value(**changes: Any) -> tuple[Status, object, str]:
        worker = WorkerView(name="w", queue="q", **changes)
        health = assess(Snapshot(workers={"w": worker}), Thresholds(), 0.0)
        (found,) = (c for c in health.checks if c.name == "worker:w:broker")
        return found.status, found.value, found.detail

    assert value() == (Status.HEALTHY, "reachable", "")
    assert value(broker_error="BrokerUnavailable: redis: refused") == (
        Status.UNHEALTHY,
        "unreachable",
        "BrokerUnavailable: redis: refused",
    )
    said = f"WrongTypeError: redis: claim from 'bad': {READY_IS_A_STRING}"
    assert value(broker_error=said, broker_damaged=True) == (Status.UNHEALTHY, "damaged", said)
