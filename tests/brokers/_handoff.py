"""What the Redis handoff tests share (test_redis_handoff, test_redis_handoff_crashes):
reading the idle registrations and a job's hash, a claim left waiting in the
background, and worker processes to kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import trio

import guild
from guild.brokers.redis import RedisBroker
from tests._poll import until


async def idle(broker: RedisBroker, queue: str = "q") -> list[str]:
    """The consumers registered idle on ``queue``, as Redis holds them."""
    found = await (await broker.redis_client()).zrange(f"{broker.prefix}:q:{queue}:idlers", 0, -1)
    return [m.decode() for m in found]


async def idle_count(broker: RedisBroker, n: int) -> bool:
    return len(await idle(broker)) >= n


async def fields(broker: RedisBroker, job_id: str, *names: str) -> list[str | None]:
    """Fields of the job's hash, read straight from Redis."""
    values = await (await broker.redis_client()).hmget(f"{broker.prefix}:job:{job_id}", list(names))
    return [None if v is None else v.decode() for v in values]


async def soon(check: Callable[[], Awaitable[bool] | bool], limit: float = 10) -> None:
    with trio.fail_after(limit):
        await until(check)


async def register_idle(
    broker: RedisBroker, *, lease: float = 30, start: int | None = 1, wait_for: float = 0.3
) -> None:
    """Register consumer "w" idle on queue q: a claim that may wait, cancelled in
    its wait, leaves its registration behind (as a worker cancelled in BLPOP)."""
    with trio.move_on_after(wait_for):
        await broker.claim("q", consumer="w", limit=2, lease=lease, wait=60, start=start)


@asynccontextmanager
async def claiming(
    broker: RedisBroker, *, consumer: str, limit: int
) -> AsyncIterator[list[guild.Delivery]]:
    """A claim on queue q waiting in the background, registered idle before the
    body runs; the list it yields holds what the claim got once the block ends."""
    got: list[guild.Delivery] = []

    async def claim() -> None:
        got.extend(await broker.claim("q", consumer=consumer, limit=limit, lease=30, wait=10))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(claim)
        await soon(lambda: idle_count(broker, 1))
        yield got


def spawn(code: str) -> subprocess.Popen[str]:
    """A Python process running ``code``, its stdout piped."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )


def spawn_victim(url: str, prefix: str, lease: float) -> subprocess.Popen[str]:
    """A process that claims on queue q as consumer "victim" (waiting up to a
    minute), prints what it got, then sleeps: the test kills it."""
    return spawn(
        f"""
        import trio
        from guild.brokers.redis import RedisBroker

        async def main():
            broker = await RedisBroker.open({url!r}, prefix={prefix!r})
            got = await broker.claim("q", consumer="victim", limit=4, lease={lease}, wait=60)
            print("got", *[d.job.id for d in got], flush=True)
            await trio.sleep_forever()

        trio.run(main)
        """
    )


def kill(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
    process.wait()
    if process.stdout is not None:
        process.stdout.close()
