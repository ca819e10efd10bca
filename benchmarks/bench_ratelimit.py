"""CPU cost of N waiters queued behind ``concurrency=1``: guild's RateLimiter vs trio's.

    python benchmarks/bench_ratelimit.py                 # N = 1,000 and 2,000
    python benchmarks/bench_ratelimit.py -n 500 -n 5000
    python benchmarks/bench_ratelimit.py --json
    python benchmarks/bench_ratelimit.py --redis redis://127.0.0.1:6379/0   # adds RedisRateLimiter

Each run: one task holds the only token while N tasks queue for it, then lets
go; every waiter takes the token, records its turn and gives it back. The
figure is the process CPU time (``time.process_time``) from the first release to
the last admission, so start-up and queueing are not counted. The rate is set
high enough never to bind, so only the count logic is measured. Both limiters
run in the same process, one after the other, and are checked to have admitted
the waiters in arrival order. With ``--redis``, guild's RedisRateLimiter runs
too (each admission is a round trip, so its row also gives the wall time).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import trio
import trio.testing

from guild.ratelimit import RateLimiter, RedisRateLimiter

Opener = Callable[[], AbstractAsyncContextManager[Any]]


async def drain(open_limiter: Opener, n: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) from the first release to the last admission."""
    async with open_limiter() as limiter:
        return await _drain(limiter, n)


async def _drain(limiter: Any, n: int) -> tuple[float, float]:
    arrived: list[int] = []
    admitted: list[int] = []

    async def take(i: int) -> None:
        arrived.append(i)
        async with limiter:
            admitted.append(i)

    limiter.acquire_on_behalf_of_nowait("holder")
    async with trio.open_nursery() as nursery:
        for i in range(n):
            nursery.start_soon(take, i)
        await trio.testing.wait_all_tasks_blocked()
        started, wall = time.process_time(), time.perf_counter()
        limiter.release_on_behalf_of("holder")
    spent, wall = time.process_time() - started, time.perf_counter() - wall
    if admitted != arrived or len(admitted) != n:
        raise AssertionError("waiters were not admitted once each in arrival order")
    return spent, wall


def plain(make: Callable[[], Any]) -> Opener:
    @asynccontextmanager
    async def opener() -> AsyncIterator[Any]:
        yield make()

    return opener


LIMITERS: dict[str, Opener] = {
    "guild.ratelimit.RateLimiter": plain(
        lambda: RateLimiter(1_000_000_000, burst=1_000_000_000, concurrency=1)
    ),
    "trio.CapacityLimiter": plain(lambda: trio.CapacityLimiter(1)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, action="append", help="waiters (repeatable)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--redis", metavar="URL", help="also run RedisRateLimiter against URL")
    args = parser.parse_args()
    limiters = dict(LIMITERS)
    if args.redis:
        limiters["guild.ratelimit.RedisRateLimiter"] = lambda: RedisRateLimiter.open(
            args.redis, "bench", 1_000_000_000, burst=1_000_000_000, concurrency=1
        )
    rows = []
    for n in args.n or [1000, 2000]:
        for name, opener in limiters.items():
            cpu, wall = trio.run(drain, opener, n)
            rows.append({"limiter": name, "waiters": n, "cpu_seconds": cpu, "wall_seconds": wall})
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"{'limiter':<34} {'waiters':>8} {'CPU s':>9} {'wall s':>9}")
    for row in rows:
        print(
            f"{row['limiter']:<34} {row['waiters']:>8}"
            f" {row['cpu_seconds']:>9.4f} {row['wall_seconds']:>9.4f}"
        )


if __name__ == "__main__":
    main()
