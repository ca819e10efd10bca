"""Client-side cost of one Redis call on Trio: coredis (through guild's pool) against a
minimal connection over hiredis's parser, the figures of docs/brokers.md "Why coredis".

    python benchmarks/bench_redis_client.py -n 3000 --rounds 3

(the prototype that ``guild/brokers/_redis_wire.py`` grew from; hiredis is a guild
dependency)

Each round runs both clients, one after the other, against a private redis-server
(``$GUILD_REDIS_SERVER`` or ``redis-server`` on PATH, on a free port): N sequential
``PING``, ``EVALSHA`` of a one-line script and ``XREADGROUP … COUNT 1`` each, after
200 warm-up calls. Printed per call: the median wall time and the CPU time
(``time.process_time()`` over the N calls, which the rest of the machine disturbs
less than wall time).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from _redis_server import redis_server

SCRIPT = b"return redis.call('INCR', KEYS[1])"
Call = Callable[[], Awaitable[Any]]


class Lean:
    """One Trio socket and hiredis's reader: one call at a time, raw replies."""

    def __init__(self, stream: trio.SocketStream) -> None:
        import hiredis

        self._stream = stream
        self._reader = hiredis.Reader()
        self._pack = hiredis.pack_command

    async def call(self, *args: Any) -> Any:
        await self._stream.send_all(self._pack(args))
        while True:
            reply = self._reader.gets()
            if reply is not False:
                if isinstance(reply, Exception):
                    raise reply
                return reply
            data = await self._stream.receive_some(65536)
            if not data:
                raise ConnectionError("redis closed the connection")
            self._reader.feed(data)


class LeanPool:
    """Idle connections on a stack under a semaphore; a failed one is dropped."""

    def __init__(self, port: int, limit: int = 64) -> None:
        self._port = port
        self._idle: list[Lean] = []
        self._slots = trio.Semaphore(limit)

    async def call(self, *args: Any) -> Any:
        async with self._slots:
            if self._idle:
                connection = self._idle.pop()
            else:
                connection = Lean(await trio.open_tcp_stream("127.0.0.1", self._port))
            reply = await connection.call(*args)
            self._idle.append(connection)
            return reply


async def timed(call: Call, n: int) -> tuple[float, float]:
    """(median wall µs, CPU µs) per call over ``n`` sequential calls."""
    for _ in range(200):
        await call()
    walls = []
    cpu = time.process_time()
    for _ in range(n):
        began = time.perf_counter()
        await call()
        walls.append(time.perf_counter() - began)
    return statistics.median(walls) * 1e6, (time.process_time() - cpu) / n * 1e6


async def lean_ops(port: int, n: int) -> dict[str, tuple[float, float]]:
    pool = LeanPool(port)
    sha = await pool.call("SCRIPT", "LOAD", SCRIPT)
    await pool.call("DEL", "lean-stream")
    for _ in range(n + 300):
        await pool.call("XADD", "lean-stream", "*", "j", "x")
    await pool.call("XGROUP", "CREATE", "lean-stream", "g", "0")
    ops: dict[str, Call] = {
        "PING": lambda: pool.call("PING"),
        "EVALSHA": lambda: pool.call("EVALSHA", sha, 1, "k"),
        "XREADGROUP": lambda: pool.call(
            "XREADGROUP", "GROUP", "g", "c", "COUNT", 1, "STREAMS", "lean-stream", ">"
        ),
    }
    return {name: await timed(call, n) for name, call in ops.items()}


async def coredis_ops(port: int, n: int) -> dict[str, tuple[float, float]]:
    import coredis

    from guild.brokers._redis_pool import SlotKeepingPool

    client: Any = coredis.Redis(
        connection_pool=SlotKeepingPool.from_url(f"redis://127.0.0.1:{port}")
    )
    async with client:
        sha = await client.script_load(SCRIPT)
        await client.delete(["coredis-stream"])
        for _ in range(n + 300):
            await client.xadd("coredis-stream", {"j": "x"})
        await client.xgroup_create("coredis-stream", "g", "0")
        ops: dict[str, Call] = {
            "PING": lambda: client.ping(),
            "EVALSHA": lambda: client.evalsha(sha, keys=["k"]),
            "XREADGROUP": lambda: client.xreadgroup(
                "g", "c", streams={"coredis-stream": ">"}, count=1
            ),
        }
        return {name: await timed(call, n) for name, call in ops.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=3000, help="calls per operation")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    try:
        import hiredis  # noqa: F401
    except ImportError:
        raise SystemExit("the lean side needs hiredis: pip install hiredis") from None
    with redis_server() as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        for round_ in range(1, args.rounds + 1):
            for name, run in (("coredis", coredis_ops), ("lean", lean_ops)):
                for op, (wall, cpu) in trio.run(run, port, args.n).items():
                    print(
                        f"round {round_}  {name:8s} {op:10s}"
                        f"  wall p50 {wall:7.1f} µs  cpu/call {cpu:7.1f} µs"
                    )


if __name__ == "__main__":
    main()
