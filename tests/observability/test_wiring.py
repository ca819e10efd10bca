"""The sandbox and rate-limiter metrics count for real: each test drives the real
code path from a handler of a running app and reads ``/metrics`` over HTTP."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

import guild
from guild import Job, MemoryBroker
from guild.observability import serve_http
from guild.ratelimit import RateLimiter, RedisRateLimiter
from guild.sandbox import Sandbox, SandboxPolicy
from tests._redis_server import RedisServer, running_redis_server

Handler = Callable[[Job], Awaitable[object]]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


@asynccontextmanager
async def serving(handler: Handler, payloads: list[object]) -> AsyncIterator[str]:
    """Run ``handler`` on ``payloads`` in a real app with its HTTP server; yield
    the server's base URL once every job has ended."""
    broker = MemoryBroker()
    app = guild.Guild("wired", broker=broker)
    left = len(payloads)
    done = trio.Event()

    @app.worker("work", concurrency=8, max_attempts=1)
    async def work(job: Job) -> object:
        nonlocal left
        try:
            return await handler(job)
        finally:
            left -= 1
            if left == 0:
                done.set()

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(serve_http, app, port=0))
            await nursery.start(app.run)
            await broker.enqueue([Job(queue="work", payload=p) for p in payloads])
            await done.wait()
            yield f"http://127.0.0.1:{port}"
            nursery.cancel_scope.cancel()


async def scrape(url: str) -> str:
    async with httpx.AsyncClient() as client:
        response = await client.get(url + "/metrics")
    assert response.status_code == 200
    return response.text


class TestSandboxMetrics:
    """``guild_sandbox_runs_total``, ``guild_sandbox_refusals_total`` and
    ``guild_sandbox_duration_seconds`` from real sandboxed commands."""

    async def test_runs_refusals_and_durations(self) -> None:
        box = Sandbox(
            SandboxPolicy(isolate="never", allow=("true", "false", "sleep"), kill_grace=0.2)
        )

        async def handler(job: Job) -> object:
            argv, timeout = job.payload
            try:
                return (await box.run(argv, timeout=timeout)).exit_code
            except (guild.CommandRefused, guild.SandboxTimeout):
                return None

        payloads: list[object] = [
            (["true"], 10),
            (["true"], 10),
            (["false"], 10),
            (["sleep", "30"], 0.2),  # killed at its timeout
            (["ls"], 10),  # not allowed
            (["sh", "-c", "true"], 10),  # not allowed either
        ]
        async with serving(handler, payloads) as url:
            text = await scrape(url)
        runs = {
            result: value(text, "guild_sandbox_runs_total", app="wired", result=result)
            for result in ("ok", "failed", "killed", "refused")
        }
        assert runs == {"ok": 2, "failed": 1, "killed": 1, "refused": 2}
        refusals = {
            labels: v
            for (name, labels), v in samples(text).items()
            if name == "guild_sandbox_refusals_total"
        }
        assert sum(refusals.values()) == 2
        assert all(dict(labels)["rule"] for labels in refusals)
        # Every run that started is timed; refusals are not.
        assert value(text, "guild_sandbox_duration_seconds_count", app="wired") == 4


class TestRateLimitMetrics:
    """``guild_ratelimit_wait_seconds`` counts the waits at a limiter, by its name."""

    async def test_local_limiter_waits(self) -> None:
        # One admission per 50 ms, no burst: of 3 at once, the 2nd and 3rd wait;
        # of the 2 at the quiet one, the 2nd waits, unreported.
        limiter = RateLimiter(20, period=1.0, name="api")
        quiet = RateLimiter(20, period=1.0, name="quiet", report=False)
        gate = trio.Event()
        arrived = 0

        async def handler(job: Job) -> object:
            nonlocal arrived
            arrived += 1
            if arrived == 5:
                gate.set()
            await gate.wait()  # all five ask at once
            chosen = quiet if job.payload == "quiet" else limiter
            async with chosen:
                return None

        async with serving(handler, ["a", "b", "c", "quiet", "quiet"]) as url:
            text = await scrape(url)
        assert quiet.statistics().waits == 1
        assert value(text, "guild_ratelimit_wait_seconds_count", app="wired", limiter="api") == 2
        assert value(text, "guild_ratelimit_wait_seconds_sum", app="wired", limiter="api") > 0
        assert ("guild_ratelimit_wait_seconds_count", "quiet") not in {
            (name, dict(labels).get("limiter")) for name, labels in samples(text)
        }

    @pytest.mark.slow
    async def test_redis_limiter_waits(self) -> None:
        with running_redis_server() as server:
            await self._redis(server)

    async def _redis(self, server: RedisServer) -> None:
        async with RedisRateLimiter.open(server.url, "shared", rate=20, burst=1) as limiter:

            async def handler(job: Job) -> object:
                async with limiter:
                    return None

            async with serving(handler, ["a", "b", "c"]) as url:
                text = await scrape(url)
        waits = value(text, "guild_ratelimit_wait_seconds_count", app="wired", limiter="shared")
        assert waits == 2


class TestOutsideARun:
    """A sandbox or a limiter used outside any ``Guild.run`` reports to nobody."""

    async def test_no_app_no_event(self) -> None:
        limiter = RateLimiter(20, period=1.0, name="lonely")
        async with limiter:
            pass
        async with limiter:  # waited: nobody to tell, and no error
            pass
        assert limiter.statistics().waits == 1
