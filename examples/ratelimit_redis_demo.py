"""Two limiters sharing one Redis limit, as two processes would: 2 at once, 20 per second.

python examples/ratelimit_redis_demo.py                    # starts a private redis-server
python examples/ratelimit_redis_demo.py redis://host:6379/0
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import trio

from guild.ratelimit import RedisRateLimiter


@contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server from PATH on a free loopback port, stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("no redis-server on PATH: pass a redis:// URL instead")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", directory],
            stdout=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait()


async def main(url: str) -> None:
    inside = most = 0
    started = trio.current_time()
    times: list[float] = []

    async def call(limiter: RedisRateLimiter) -> None:
        nonlocal inside, most
        async with limiter:
            times.append(trio.current_time() - started)
            inside += 1
            most = max(most, inside)
            await trio.sleep(0.05)  # the pretend API call
            inside -= 1

    settings = {"rate": 20, "burst": 2, "concurrency": 2}
    async with (
        RedisRateLimiter.open(url, "demo-api", **settings) as first,
        RedisRateLimiter.open(url, "demo-api", **settings) as second,
        trio.open_nursery() as nursery,
    ):
        for i in range(10):
            nursery.start_soon(call, first if i % 2 else second)
    print(f"10 calls through two limiters, at most {most} at once")
    print(f"last call admitted after {max(times):.2f}s (20/s with a burst of 2: >= 0.40s)")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, sys.argv[1])
    else:
        with private_redis() as url:
            trio.run(main, url)
