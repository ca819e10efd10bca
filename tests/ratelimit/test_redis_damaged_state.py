"""A Redis rate limiter's GCRA state that another program overwrote with a value
that is no finite number fails every call that reads it with a
``guild.BrokerDataError`` naming the key, having written nothing; a worker with
that limit waits it out (before: a Lua arithmetic error, a plain BrokerError on
which the worker crash-looped), and resumes once the key is deleted.

On a real redis-server; the key is overwritten with raw Redis commands, as
another program would; the expected texts are written out here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
import trio

import guild
from guild import Job
from guild.observability import ObservabilityApp, Status, observe
from guild.ratelimit import RedisRateLimiter
from tests._poll import until
from tests._redis_server import RedisServer, redis_command, running_redis_server

HINT = "(another program's key under guild's prefix?)"


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


def _says(name: str) -> str:
    return (
        f"rate limiter {name!r}: the key guild:ratelimit:{name} holds a string,"
        f" not a finite number {HINT}"
    )


@pytest.mark.parametrize("junk", ["banana", "nan", "inf", "1e999", ""])
async def test_every_call_reading_a_junk_state_names_the_key_and_writes_nothing(
    redis_server: RedisServer, junk: str
) -> None:
    name = "junk-state"
    key = f"guild:ratelimit:{name}"
    assert redis_command(redis_server, "SET", key, junk) == b"+OK\r\n"
    with trio.fail_after(20):
        async with RedisRateLimiter.open(redis_server.url, name, rate=5, concurrency=2) as limiter:
            with pytest.raises(guild.BrokerDataError) as refused:
                await limiter.acquire_on_behalf_of("a")
            assert str(refused.value) == _says(name)
            with pytest.raises(guild.BrokerDataError) as refused:
                limiter.acquire_on_behalf_of_nowait("b")
            assert str(refused.value) == _says(name)
            with pytest.raises(guild.BrokerDataError) as refused:
                await limiter.try_acquire()
            assert str(refused.value) == _says(name)
            with pytest.raises(guild.BrokerDataError) as refused:
                await limiter.hold_off(1.0)
            assert str(refused.value) == _says(name)
            assert (limiter.borrowed_tokens, limiter.statistics().tasks_waiting) == (0, 0)
            # Nothing written: the value stands, no holder, no place in line.
            assert redis_command(redis_server, "GET", key) == (
                f"${len(junk)}\r\n{junk}\r\n".encode()
            )
            for suffix in (":holders", ":waiters", ":waiters:expiry"):
                assert redis_command(redis_server, "EXISTS", key + suffix) == b":0\r\n"
            # Deleted: the limiter works again.
            assert redis_command(redis_server, "DEL", key) == b":1\r\n"
            await limiter.acquire_on_behalf_of("a")
            assert limiter.borrowed_tokens == 1
            limiter.release_on_behalf_of("a")


async def test_a_worker_with_that_limit_waits_naming_the_key_and_resumes_once_deleted(
    redis_server: RedisServer,
) -> None:
    # A supervisor that gives up at the second crash within a minute: a worker
    # restarted for the junk state would take the app down at once.
    app = guild.Guild(
        "junk-limit",
        supervision=guild.SupervisorOptions(
            max_restarts=1, period=60.0, backoff=guild.Backoff(initial=0.01, maximum=0.01)
        ),
    )
    ran: list[object] = []

    @app.worker("limited", limit=guild.Limit(rate="100/s", key=lambda job: "t1"))
    async def limited(job: Job) -> object:
        ran.append(job.payload)
        return job.payload

    # The limiter of key t1, under the broker's prefix (see guild.Limit).
    name = "guild:limit:limited:t1"
    key = f"guild:ratelimit:{name}"
    assert redis_command(redis_server, "SET", key, "banana") == b"+OK\r\n"
    site = ObservabilityApp(app, observe(app, logs=False))
    with trio.fail_after(60), structlog.testing.capture_logs() as logs:
        async with guild.open_broker(redis_server.url) as direct, app.open(redis_server.url):
            (job,) = await direct.enqueue([Job(queue="limited", payload="x")])
            await until(lambda: app.workers()["limited"].broker_error is not None)
            stats = app.workers()["limited"]
            assert (stats.broker_error, stats.broker_damaged) == (
                f"BrokerDataError: {_says(name)}",
                True,
            )
            await trio.sleep(1.5)  # tried again and again: longer than the restarts allow
            health, _ = await site.health()
            checks = {c.name: c for c in health.checks}
            broker = checks["worker:limited:broker"]
            assert (broker.status, broker.value) == (Status.UNHEALTHY, "damaged")
            assert checks["worker:limited:state"].status is Status.HEALTHY
            assert health.workers["limited"].restarts == 0
            assert ran == []
            assert redis_command(redis_server, "DEL", key) == b":1\r\n"
            result = await direct.get_result(job.id, wait=30)
            assert result is not None and result.value == "x"
            await until(lambda: app.workers()["limited"].broker_error is None)
    assert ran == ["x"]
    damaged = [e for e in logs if e["event"] == "broker_data_damaged"]
    assert [(e["worker"], e["during"]) for e in damaged] == [("limited", "limit")]
