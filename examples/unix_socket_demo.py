"""A Redis broker on a unix socket: ``unix:///path/redis.sock?db=N``, or the same
URL spelled ``redis+unix://…``.

    python examples/unix_socket_demo.py                              # a private redis-server
    python examples/unix_socket_demo.py /run/redis/redis.sock        # a Redis of yours

Without an argument it starts a redis-server from PATH that listens on a socket in
a private directory and on no TCP port. An app's worker runs on one spelling while
the producer enqueues through the other: both reach the same database.
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import trio

import guild

app = guild.Guild("unix-socket")


@app.worker("squares", concurrency=2)
async def square(job: guild.Job) -> int:
    return int(job.payload) ** 2


@contextmanager
def private_redis() -> Iterator[Path]:
    """A redis-server from PATH on a unix socket only (``--port 0``), stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("no redis-server on PATH: pass the path of a Redis socket instead")
    # A short directory: a socket path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="guild-sock-") as directory:
        path = Path(directory) / "redis.sock"
        # appendonly: guild warns about a Redis that would lose every job on a restart.
        argv = [binary, "--port", "0", "--unixsocket", str(path), "--appendonly", "yes"]
        server = subprocess.Popen([*argv, "--dir", directory], stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not path.exists():
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("redis-server did not start on its unix socket")
                time.sleep(0.02)
            yield path
        finally:
            server.terminate()
            server.wait()


async def main(socket: Path) -> None:
    worker_url = f"unix://{socket}?db=3"
    producer_url = f"redis+unix://{socket}?db=3"
    stop = trio.Event()
    async with guild.open_broker(worker_url) as broker, trio.open_nursery() as nursery:
        await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
        async with guild.AsyncClient(producer_url) as client:
            job = await client.enqueue("squares", 7)
            result = await client.result(job, wait=10)
            assert result is not None
            print(f"worker on unix://, producer on redis+unix://: 7 squared is {result.value}")
        stop.set()  # drain and return
    # The database is the db option: database 3 holds the job, database 0 does not.
    async with guild.open_broker(f"unix://{socket}?db=0") as other:
        print(f"the job in db 0: {await other.get_result(job.id) is not None}")
    async with guild.open_broker(f"unix://{socket}?db=3") as same:
        print(f"the job in db 3: {await same.get_result(job.id) is not None}")
    # A unix URL names a path on this machine: a host in it is refused.
    try:
        async with guild.open_broker(f"unix://localhost{socket}"):
            pass
    except guild.UnknownBrokerURL as exc:
        print(f"with a host: {type(exc).__name__}: {str(exc).partition(': ')[2]}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        trio.run(main, Path(sys.argv[1]))
    else:
        with private_redis() as path:
            trio.run(main, path)
