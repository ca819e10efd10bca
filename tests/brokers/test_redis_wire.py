"""The lean Redis connections (``guild.brokers._redis_wire``) against a real redis-server:
what URLs they take, the handshake, scripts after a flush, dropped connections,
and errors mapped as coredis's are."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio

from guild import BrokerError, BrokerUnavailable
from guild.brokers._redis_errors import GroupExistsError, WrongTypeError, map_redis_exceptions
from guild.brokers._redis_wire import (
    ReplyError,
    WireAddress,
    WireCommands,
    WireConnectionError,
    WirePool,
)
from guild.brokers.redis import RedisBroker
from tests._poll import until
from tests._redis_server import RedisServer, redis_cli_binary, running_redis_server

_INCR = "return redis.call('INCR', KEYS[1])"
_INCR_SHA = "f8bbd2ab5d8ac89b6b0b2c1b2ea1c4b4f7a1a0a4"  # not cached anywhere: NOSCRIPT


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with running_redis_server() as server:
        yield server


@pytest.fixture
async def pool(server: RedisServer) -> AsyncIterator[WirePool]:
    pool = WirePool.from_url(server.url)
    assert pool is not None
    yield pool
    pool.close()  # trio closes sockets inside its run only


async def _cli(port: int, *args: str) -> str:
    done = await trio.run_process(
        [redis_cli_binary(), "-p", str(port), "--no-auth-warning", *args], capture_stdout=True
    )
    return done.stdout.decode().strip()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("redis://127.0.0.1:7001/0", WireAddress("127.0.0.1", 7001)),
        ("redis://example.org", WireAddress("example.org", 6379)),
        ("redis://:s%40cret@h:1/5", WireAddress("h", 1, None, None, "s@cret", 5)),
        ("redis://ann:pw@h:1", WireAddress("h", 1, None, "ann", "pw", 0)),
        ("unix:///run/redis.sock", WireAddress(path="/run/redis.sock")),
        ("unix:///run/redis.sock?db=2", WireAddress(path="/run/redis.sock", db=2)),
        # What only coredis speaks: the broker keeps coredis for every call.
        ("rediss://h:1/0", None),
        ("redis://h:1/0?protocol_version=2", None),
        ("redis://h:1/zero", None),
        ("redis://ann@h:1", None),
        ("unix:///run/redis.sock?timeout=1", None),
        ("redis+cluster://h:1", None),
        ("redis://h:port", None),
    ],
)
def test_urls_the_lean_path_takes(url: str, expected: WireAddress | None) -> None:
    assert WireAddress.from_url(url) == expected


async def test_password_and_database_are_used(server: RedisServer) -> None:
    await _cli(server.port, "CONFIG", "SET", "requirepass", "s@cret")
    pool = WirePool.from_url(f"redis://:s%40cret@127.0.0.1:{server.port}/3")
    assert pool is not None
    assert await pool.call("SET", "k", "v") == b"OK"
    found = await _cli(server.port, "-a", "s@cret", "-n", "3", "GET", "k")
    assert found == "v"
    pool.close()
    wrong = WirePool.from_url(f"redis://:nope@127.0.0.1:{server.port}/3")
    assert wrong is not None
    with pytest.raises(BrokerError, match="connect"), map_redis_exceptions("connect"):
        await wrong.call("PING")


async def test_a_script_redis_forgot_is_run_by_its_body(
    server: RedisServer, pool: WirePool
) -> None:
    assert await pool.evalsha(_INCR_SHA, _INCR, ["n"], []) == 1
    await _cli(server.port, "SCRIPT", "FLUSH")
    assert await pool.evalsha(_INCR_SHA, _INCR, ["n"], []) == 2
    assert await _cli(server.port, "GET", "n") == "2"


async def test_replies_decode_as_through_coredis(server: RedisServer, pool: WirePool) -> None:
    # A script's false is nil (a script would have to ask for RESP3 replies),
    # strings are bytes, numbers ints; RESP3 booleans come through as such.
    assert await pool.call("EVAL", "return false", 0) is None
    assert await pool.call("EVAL", "redis.setresp(3); return false", 0) is False
    assert await pool.call("EVAL", "return true", 0) == 1
    assert await pool.call("EVAL", "return {1, 'a'}", 0) == [1, b"a"]
    assert await pool.call("GET", "absent") is None
    replies = await pool.execute(("RPUSH", "l", "x"), ("BLPOP", "l", "0.5"))
    assert replies == [1, [b"l", b"x"]]


async def test_a_cancelled_call_closes_its_connection(server: RedisServer, pool: WirePool) -> None:
    await pool.call("PING")
    with trio.move_on_after(0.3):
        await pool.call("BLPOP", "inbox", "30")
    # The server saw the BLPOP's connection go: nothing is popped for it.
    await _cli(server.port, "RPUSH", "inbox", "job")
    assert await pool.call("LLEN", "inbox") == 1
    assert await pool.call("LPOP", "inbox") == b"job"
    clients = await _cli(server.port, "CLIENT", "LIST")
    assert "cmd=blpop" not in clients


async def test_a_killed_connection_is_unavailable_then_replaced(
    server: RedisServer, pool: WirePool
) -> None:

    async def kill_when_blocked() -> None:
        await until(lambda: _cli_blocked(server.port))
        await _cli(server.port, "CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(kill_when_blocked)
        with pytest.raises(BrokerUnavailable, match="wait"), map_redis_exceptions("wait"):
            await pool.call("BLPOP", "inbox", "30")
    assert await pool.call("PING") == b"PONG"
    pool.close()
    with pytest.raises(WireConnectionError):
        await pool.call("PING")


async def _mapped(pool: WirePool, what: str, *command: str) -> object:
    with map_redis_exceptions(what):
        return await pool.call(*command)


async def _cli_blocked(port: int) -> bool:
    return "cmd=blpop" in await _cli(port, "CLIENT", "LIST")


async def test_error_replies_map_as_coredis_errors_do(server: RedisServer, pool: WirePool) -> None:
    await pool.call("SET", "s", "v")
    with pytest.raises(BrokerError, match=r"^redis: push: Operation against a key") as error:
        await _mapped(pool, "push", "LPUSH", "s", "x")
    assert not isinstance(error.value, BrokerUnavailable)
    await _cli(server.port, "CONFIG", "SET", "maxmemory-policy", "noeviction")
    await _cli(server.port, "CONFIG", "SET", "maxmemory", "1")
    with pytest.raises(BrokerUnavailable, match=r"^redis refuses push: OOM"):
        await _mapped(pool, "push", "SET", "t", "v")
    await _cli(server.port, "CONFIG", "SET", "maxmemory", "0")
    # A server still loading its data set: coredis raises a connection error.
    loading = ReplyError("LOADING Redis is loading the dataset in memory")
    with pytest.raises(BrokerUnavailable, match="Redis is loading"), map_redis_exceptions("claim"):
        raise loading


async def test_the_broker_uses_lean_connections_only_when_it_opened_the_url(
    server: RedisServer,
) -> None:
    broker = await RedisBroker.open(server.url)
    wire = broker._wire
    assert wire is not None
    client = await broker.redis_client()
    passed = RedisBroker(client)
    assert passed._wire is None
    await broker.aclose()
    with pytest.raises(WireConnectionError):
        await wire.call("PING")


@pytest.mark.parametrize("through", ["wire", "coredis"])
async def test_the_broker_calls_set_nx_and_group_create_alike_on_either_client(
    server: RedisServer, pool: WirePool, through: str
) -> None:
    broker = await RedisBroker.open(server.url)
    commands: Any = WireCommands(pool) if through == "wire" else await broker.redis_client()
    try:
        with map_redis_exceptions("set"):
            await commands.set("marker", "first", condition="NX")
            await commands.set("marker", "second", condition="NX")
        assert await _cli(server.port, "GET", "marker") == "first"
        with map_redis_exceptions("create group"):
            await commands.xgroup_create("stream", "workers", "0", mkstream=True)
        assert await _cli(server.port, "XINFO", "GROUPS", "stream") != ""
        # Made already (by another process): typed, so the broker suppresses it alone.
        with (
            pytest.raises(GroupExistsError, match=r"^redis: create group: "),
            map_redis_exceptions("create group"),
        ):
            await commands.xgroup_create("stream", "workers", "0", mkstream=True)
        # A key of another type: typed, so list_dead goes on past that one record.
        with (
            pytest.raises(WrongTypeError, match=r"^redis: read: Operation against a key"),
            map_redis_exceptions("read"),
        ):
            await commands.hgetall("marker")
        with pytest.raises(BrokerError) as other, map_redis_exceptions("create group"):
            await commands.xgroup_create("marker", "workers", "0", mkstream=True)
        assert type(other.value) is WrongTypeError
        with pytest.raises(BrokerError) as untyped, map_redis_exceptions("incr"):
            await commands.register_script("return redis.error_reply('ERR nope')")(keys=[], args=[])
        assert type(untyped.value) is BrokerError
    finally:
        await broker.aclose()
