"""An in-process app on Redis keeps every job through cut connections and a restart."""

from __future__ import annotations

import collections
import contextlib
from collections.abc import Iterator

import pytest
import trio

import guild
from tests._redis_server import RedisServer, running_redis_server

from .._state_log import StateLog
from ._proxy import TcpProxy
from ._support import (
    QUEUE,
    enqueue_batched,
    queue_stats,
    results,
    wait_for_done,
)

JOBS = 2000
STORM_CUTS = 30
# A broker outage (a cut connection) is waited out, not a crash; these tests
# still allow many restarts so that a crash they did not expect shows in the
# report rather than as a GaveUp.
TOLERANT = guild.SupervisorOptions(max_restarts=30, period=5.0)


def _app(seen: collections.Counter[str]) -> tuple[guild.Guild, StateLog]:
    log = StateLog()
    app = guild.Guild("redis-e2e", instruments=[log], supervision=TOLERANT)

    # A short lease brings back, within 2 s, jobs whose claim or release was lost
    # with a connection.
    @app.worker(QUEUE, concurrency=8, lease=2.0, timeout=30)
    async def work(job: guild.Job) -> object:
        seen[job.id] += 1
        await trio.sleep(0.01)
        return job.payload

    return app, log


async def _assert_all_done(
    broker: guild.Broker, jobs: list[guild.Job], seen: collections.Counter[str]
) -> None:
    stats = await queue_stats(broker)
    assert (stats.done, stats.ready, stats.delayed, stats.in_flight, stats.dead) == (
        len(jobs),
        0,
        0,
        0,
        0,
    )
    missing = [job.payload for job in jobs if seen[job.id] == 0]
    assert missing == [], f"{len(missing)} jobs never ran"
    for job, result in zip(jobs, await results(broker, jobs), strict=True):
        assert result is not None and result.ok, (job.payload, result)
        assert result.value == job.payload


def _report(name: str, supervision: StateLog, seen: collections.Counter[str]) -> str:
    crashes = collections.Counter(supervision.errors())
    duplicates = sum(1 for n in seen.values() if n > 1)
    return (
        f"[{name}] worker crashes: {sum(crashes.values())} {dict(crashes)};"
        f" jobs run more than once: {duplicates}"
    )


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture
def aof_redis_server() -> Iterator[RedisServer]:
    with running_redis_server(appendonly=True) as server:
        yield server


async def test_tcp_proxy_drops_connections(redis_server: RedisServer) -> None:
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    proxy = TcpProxy(target_port=redis_server.port)
    with trio.fail_after(60):
        async with (
            trio.open_nursery() as nursery,
            guild.open_broker(redis_server.url) as direct,
        ):
            await nursery.start(proxy.serve)
            jobs = await enqueue_batched(direct, list(range(JOBS)))
            async with app.open(proxy.url):
                # Busy: every connection the app holds is reset at 1/4, 1/2 and 3/4.
                for quarter in (1, 2, 3):
                    await wait_for_done(direct, JOBS * quarter // 4)
                    assert proxy.cut() >= 1, "the app held no connection to cut"
                await wait_for_done(direct, JOBS)

                # Idle: the claimer is blocked waiting for work when its connection goes.
                await trio.sleep(0.3)
                accepted = proxy.accepted
                assert proxy.cut() >= 1
                jobs += await enqueue_batched(direct, list(range(JOBS, JOBS + 200)))
                await wait_for_done(direct, len(jobs))
                assert proxy.accepted > accepted, "the app did not reconnect"

                # A storm: a cut every 50 ms while a batch runs.
                jobs += await enqueue_batched(direct, list(range(JOBS + 200, JOBS + 1200)))
                for _ in range(STORM_CUTS):
                    if (await queue_stats(direct)).done >= len(jobs):
                        break
                    await trio.sleep(0.05)
                    proxy.cut()
                await wait_for_done(direct, len(jobs))
            # Checked before the proxy's nursery is cancelled: after that every await
            # in this block would be cancelled, and the checks would silently not run.
            await _assert_all_done(direct, jobs, seen)
            nursery.cancel_scope.cancel()
    assert supervision.count("gave_up") == 0
    print(
        f"\n{_report('proxy', supervision, seen)};"
        f" {proxy.cuts} cuts, {proxy.accepted} connections accepted"
    )


async def test_redis_restart_with_aof(aof_redis_server: RedisServer) -> None:
    server = aof_redis_server
    seen: collections.Counter[str] = collections.Counter()
    app, supervision = _app(seen)
    with trio.fail_after(60):
        async with guild.open_broker(server.url) as direct:
            jobs = await enqueue_batched(direct, list(range(JOBS)))
            async with app.open(server.url):
                await wait_for_done(direct, JOBS // 3)
                await trio.to_thread.run_sync(server.stop)
                # Down long enough for claims, acks and lease renewals to fail.
                await trio.sleep(1.0)
                await trio.to_thread.run_sync(server.start)
                after_restart = await queue_stats(direct)
                assert after_restart.done >= JOBS // 3, "the AOF lost finished jobs"
                assert after_restart.done + after_restart.ready + after_restart.in_flight == JOBS
                await wait_for_done(direct, JOBS)
            await _assert_all_done(direct, jobs, seen)
    # The restart is an outage the worker waits out: no crash, no restart.
    assert supervision.count("crashed") == 0, supervision.errors()
    assert supervision.count("gave_up") == 0
    print(f"\n{_report('restart', supervision, seen)}; after the restart: {after_restart}")


async def test_blocked_reads_cut_many_times_still_claim() -> None:
    """More cut blocking reads than the client has connections: claims still work.

    coredis 6.9 loses a pool slot for each connection that dies while a command
    holds it; after 64 the client waits forever. guild's pools keep the slot."""
    with running_redis_server() as server, trio.fail_after(120):
        proxy = TcpProxy(server.port)
        async with trio.open_nursery() as nursery:
            await nursery.start(proxy.serve)
            async with guild.open_broker(proxy.url) as broker:
                for _ in range(70):
                    nursery.start_soon(_cut_after, proxy, 0.02)
                    # Each claim blocks in XREAD until its connection is cut.
                    with trio.fail_after(5), contextlib.suppress(guild.BrokerUnavailable):
                        await broker.claim(QUEUE, consumer="c", limit=1, lease=5.0, wait=0.2)
                await broker.enqueue([guild.Job(queue=QUEUE, payload="after the cuts")])
                with trio.fail_after(5):
                    taken = await broker.claim(QUEUE, consumer="c", limit=1, lease=5.0, wait=1.0)
                assert [d.job.payload for d in taken] == ["after the cuts"]
            nursery.cancel_scope.cancel()
        assert proxy.cuts >= 64


async def _cut_after(proxy: TcpProxy, delay: float) -> None:
    await trio.sleep(delay)
    proxy.cut()
