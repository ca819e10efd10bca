"""A key of a Redis rate limiter's that holds another type (another program's key
under guild's prefix) fails each call whose script uses it with a
``guild.BrokerDataError`` naming that key, its type and the type it should hold,
having written nothing; and once the key is deleted the limiter works again.

Before, Redis's own WRONGTYPE error came back (``redis refused the script:
WRONGTYPE Operation against a key holding the wrong kind of value``), naming no
key, and a script failing midway had already written what came before (a place
in the line of waiters). On a real redis-server; the keys are planted with raw
Redis commands, as another program would; the expected texts are written out.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog
import trio

import guild
from guild.ratelimit import RedisRateLimiter
from tests._poll import until
from tests._redis_server import RedisServer, redis_command, running_redis_server

HINT = "(another program's key under guild's prefix?)"
SUFFIXES = ("", ":holders", ":waiters", ":waiters:expiry")


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


# (the key's suffix, the commands that plant another type there, what the error says)
PLANTED = [
    ("", ["RPUSH", "{key}", "a"], "holds a list, not a string"),
    ("", ["HSET", "{key}", "f", "v"], "holds a hash, not a string"),
    ("", ["ZADD", "{key}", "1", "m"], "holds a sorted set, not a string"),
    (":holders", ["SET", "{key}", "junk"], "holds a string, not a sorted set"),
    (":holders", ["SADD", "{key}", "m"], "holds a set, not a sorted set"),
    (":waiters", ["SET", "{key}", "junk"], "holds a string, not a sorted set"),
    (":waiters", ["RPUSH", "{key}", "a"], "holds a list, not a sorted set"),
    (":waiters:expiry", ["SET", "{key}", "junk"], "holds a string, not a sorted set"),
    (":waiters:expiry", ["HSET", "{key}", "f", "v"], "holds a hash, not a sorted set"),
]


def _plant(server: RedisServer, key: str, command: list[str]) -> None:
    assert redis_command(server, *(word.format(key=key) for word in command))[:1] in (b"+", b":")


def _exists(server: RedisServer, key: str) -> bool:
    return redis_command(server, "EXISTS", key) == b":1\r\n"


@pytest.mark.parametrize(
    ("suffix", "command", "says"), PLANTED, ids=[f"{p[0] or 'state'}-{p[1][0]}" for p in PLANTED]
)
async def test_each_call_names_the_key_of_another_type_and_writes_nothing(
    redis_server: RedisServer, suffix: str, command: list[str], says: str
) -> None:
    name = f"wrong-type{suffix.replace(':', '-')}-{command[0].lower()}"
    base = f"guild:ratelimit:{name}"
    junk = base + suffix
    _plant(redis_server, junk, command)
    message = f"rate limiter {name!r}: the key {junk} {says} {HINT}"
    with trio.fail_after(20):
        async with RedisRateLimiter.open(redis_server.url, name, rate=5, concurrency=2) as limiter:
            with pytest.raises(guild.BrokerDataError) as refused:
                await limiter.acquire_on_behalf_of("a")
            assert str(refused.value) == message
            with pytest.raises(guild.BrokerDataError) as refused:
                limiter.acquire_on_behalf_of_nowait("b")
            assert str(refused.value) == message
            with pytest.raises(guild.BrokerDataError) as refused:
                await limiter.try_acquire()
            assert str(refused.value) == message
            if suffix == "":
                with pytest.raises(guild.BrokerDataError) as refused:
                    await limiter.hold_off(1.0)
                assert str(refused.value) == message
            assert (limiter.borrowed_tokens, limiter.statistics().tasks_waiting) == (0, 0)
            # Nothing written: no other key of the limiter's came to be.
            assert [s for s in SUFFIXES if _exists(redis_server, base + s)] == [suffix]
            # Deleted: the limiter works again.
            assert redis_command(redis_server, "DEL", junk) == b":1\r\n"
            await limiter.acquire_on_behalf_of("a")
            assert limiter.borrowed_tokens == 1
            limiter.release_on_behalf_of("a")


async def test_the_lease_renewal_names_the_key_in_its_warning(redis_server: RedisServer) -> None:
    """The task that renews leases and carries tokens back survives the key (the
    waiters report it); its warning names the key as the waiters' errors do."""
    name = "wrong-type-renewal"
    holders = f"guild:ratelimit:{name}:holders"
    with trio.fail_after(20), structlog.testing.capture_logs() as logs:
        async with RedisRateLimiter.open(
            redis_server.url, name, rate=None, concurrency=2
        ) as limiter:
            await limiter.acquire_on_behalf_of("a")
            assert redis_command(redis_server, "DEL", holders) == b":1\r\n"
            _plant(redis_server, holders, ["SET", "{key}", "junk"])
            limiter.release_on_behalf_of("a")  # carried back by the renewal task, at once
            await until(lambda: any(e["event"] == "ratelimit.maintenance_failed" for e in logs))
            assert redis_command(redis_server, "DEL", holders) == b":1\r\n"
    failed = [e for e in logs if e["event"] == "ratelimit.maintenance_failed"]
    assert failed[0]["error"] == (
        f"rate limiter {name!r}: the key {holders} holds a string, not a sorted set {HINT}"
    )
