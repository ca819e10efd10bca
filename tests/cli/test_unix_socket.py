"""A Redis broker on a unix socket: ``unix:///path/redis.sock?db=N`` (or
``redis+unix://…``) opens through ``guild.open_broker``, ``RedisBroker.open`` and
every command's ``--broker``, against a real redis-server listening on a socket
in a private directory (and on no TCP port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import guild
from guild.brokers._url import check_broker_url
from guild.brokers.redis import RedisBroker
from tests._redis_server import redis_server_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def socket_path() -> Iterator[Path]:
    # A short directory of its own: a socket path is limited to about 100 bytes.
    with tempfile.TemporaryDirectory(prefix="guild-sock-") as directory:
        path = Path(directory) / "redis.sock"
        argv = [redis_server_binary(), "--port", "0", "--unixsocket", str(path)]
        argv += ["--save", "", "--appendonly", "no", "--dir", directory, "--daemonize", "no"]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while not path.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("redis-server on a unix socket did not start")
                time.sleep(0.02)
            yield path
        finally:
            process.terminate()
            process.wait(timeout=10)


async def test_each_spelling_opens_and_keeps_its_database(socket_path: Path) -> None:
    urls = {
        # The lean wire path speaks a socket with a db option ...
        "wire": f"unix://{socket_path}?db=1",
        "plus": f"redis+unix://{socket_path}?db=2&done_ttl=60",
        # ... and an option only coredis reads takes coredis, on the same socket.
        "coredis": f"unix://{socket_path}?db=3&client_name=guild-test",
    }
    for name, url in urls.items():
        assert check_broker_url(url) in ("unix", "redis+unix")
        async with guild.open_broker(url) as broker:
            await broker.enqueue([guild.Job(queue=f"q-{name}", payload=name)] * 2)
    for name, url in urls.items():
        async with guild.open_broker(url) as broker:
            assert isinstance(broker, RedisBroker)
            # Private, but the point: both transports were taken.
            assert (broker._wire is None) == (name == "coredis")
            counts = await broker.stats([f"q-{n}" for n in urls])
            assert {q: c.ready for q, c in counts.items()} == {
                f"q-{n}": 2 if n == name else 0 for n in urls
            }
            if name == "plus":
                assert broker.retention.done == 60.0
    # RedisBroker.open takes the redis+unix spelling as well.
    broker = await RedisBroker.open(f"redis+unix://{socket_path}?db=2")
    try:
        assert (await broker.stats(["q-plus"]))["q-plus"].ready == 2
    finally:
        await broker.aclose()


async def test_a_missing_socket_is_unavailable(socket_path: Path) -> None:
    with pytest.raises(guild.BrokerUnavailable, match="No such file"):
        async with guild.open_broker(f"unix://{socket_path.parent / 'absent.sock'}"):
            pytest.fail("opened a socket that is not there")


def test_the_commands_take_a_socket_url(socket_path: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    url = f"redis+unix://{socket_path}?db=5"

    def guild_cli(*args: str) -> subprocess.CompletedProcess[bytes]:
        argv = [sys.executable, "-m", "guild", *args, "--broker", url]
        return subprocess.run(argv, capture_output=True, cwd=tmp_path, env=env, timeout=60)

    enqueued = guild_cli("enqueue", "sock", "1", "--json")
    assert enqueued.returncode == 0, enqueued.stderr
    stats = guild_cli("stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["sock"]["ready"] == 1
    assert list(tmp_path.iterdir()) == []
