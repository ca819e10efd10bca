"""guild's coredis pools: a connection killed mid-command gives its slot back.

coredis 6.9's own pools keep a slot only for a connection that died idle; one
killed while a command held it (a blocking ``BLPOP`` here) is lost, and after
``max_connections`` such kills every call waits forever. The server kills the
connections (``CLIENT KILL``), on one server and on every node of a cluster.
"""

from __future__ import annotations

import contextlib
from typing import Any

import coredis
import coredis.exceptions
import coredis.pool
import pytest
import trio
from coredis.connection import TCPLocation

from guild import BrokerError
from guild.brokers._redis_pool import SlotKeepingClusterPool, SlotKeepingPool
from tests._poll import until
from tests._redis_server import RedisCluster, RedisServer, redis_cli_binary

# Twice the pool's size: without the slots given back, the last kills leave none.
_POOL_SIZE = 4
_KILLS = 2 * _POOL_SIZE


async def _cli(port: int, *args: str) -> str:
    done = await trio.run_process([redis_cli_binary(), "-p", str(port), *args], capture_stdout=True)
    return done.stdout.decode()


async def _kill_once_blocked(ports: list[int], killed: trio.Event) -> None:
    async def blocked() -> bool:
        return any(["cmd=blpop" in await _cli(port, "CLIENT", "LIST") for port in ports])

    # Kill only once the server holds the BLPOP, so each kill lands mid-command.
    await until(blocked, interval=0.005)
    for port in ports:
        await _cli(port, "CLIENT", "KILL", "TYPE", "normal")
    killed.set()


async def _kill_blocked_calls_then_ping(client: Any, ports: list[int]) -> None:
    async with client, trio.open_nursery() as nursery:
        for _ in range(_KILLS):
            killed = trio.Event()
            nursery.start_soon(_kill_once_blocked, ports, killed)
            # coredis may retry the BLPOP on a fresh connection: it then times out.
            with trio.fail_after(10), contextlib.suppress(coredis.exceptions.ConnectionError):
                await client.blpop(["{pool}:never"], timeout=0.5)
            with trio.fail_after(10):
                await killed.wait()
        with trio.fail_after(5):
            assert await client.ping() == b"PONG"


async def test_killed_connections_give_their_slots_back(redis_server: RedisServer) -> None:
    pool = SlotKeepingPool.from_url(redis_server.url, max_connections=_POOL_SIZE)
    await _kill_blocked_calls_then_ping(coredis.Redis(connection_pool=pool), [redis_server.port])


async def test_killed_cluster_connections_give_their_slots_back(
    redis_cluster: RedisCluster,
) -> None:
    first = redis_cluster.ports[0]
    pool = SlotKeepingClusterPool.from_url(
        f"redis://127.0.0.1:{first}",
        startup_nodes=[TCPLocation("127.0.0.1", first)],
        max_connections=_POOL_SIZE,
        max_connections_per_node=True,
    )
    await _kill_blocked_calls_then_ping(
        coredis.RedisCluster(connection_pool=pool), redis_cluster.ports
    )


def test_a_coredis_without_the_slot_queue_is_refused_at_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built = coredis.pool.ConnectionPool.__init__

    def renamed(self: Any, *args: Any, **options: Any) -> None:
        built(self, *args, **options)
        self._slots = self.__dict__.pop("_available_connections")

    monkeypatch.setattr(coredis.pool.ConnectionPool, "__init__", renamed)
    with pytest.raises(
        BrokerError, match="has no connection-pool attribute '_available_connections'"
    ):
        SlotKeepingPool.from_url("redis://127.0.0.1:1")
