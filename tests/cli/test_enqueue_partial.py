"""``guild enqueue QUEUE -`` that fails partway: the batches stored are named,
their ids printed, so nothing is lost and a retry need not double them.

Real parts: a redis-server whose ``maxmemory`` lets one 500-job batch in and
refuses the second (Redis denies a script whose first write meets the limit, and
never stops one halfway), and the CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import trio

import guild
from tests._redis_server import RedisServer, redis_cli, running_redis_server

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = "x" * 2000


def _lines(count: int, start: int = 0) -> bytes:
    return b"".join(
        json.dumps(f"{PAYLOAD}{n}").encode() + b"\n" for n in range(start, start + count)
    )


def _enqueue(url: str, stdin: bytes, *flags: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUILD_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "guild", "enqueue", "q", "-", "--broker", url, *flags],
        input=stdin,
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )


def _used_memory(server: RedisServer) -> int:
    info = redis_cli(server.port, "info", "memory")
    return next(
        int(line.split(":")[1]) for line in info.splitlines() if line.startswith("used_memory:")
    )


async def _stored(url: str, ids: list[str]) -> tuple[int, list[str]]:
    """How many jobs wait on q, and which of ``ids`` the broker knows nothing of."""
    async with guild.open_broker(url) as broker:
        ready = (await broker.stats(["q"]))["q"].ready
        return ready, [i for i in ids if await broker.job_info(i) is None]


def test_a_failed_batch_names_what_went_in_and_prints_its_ids() -> None:
    with running_redis_server() as server:
        url = f"redis://127.0.0.1:{server.port}/0"
        # What one batch of 500 costs Redis, measured, then the store cleared.
        assert _enqueue(url, _lines(1)).returncode == 0
        before = _used_memory(server)
        assert _enqueue(url, _lines(500)).returncode == 0
        batch = _used_memory(server) - before
        redis_cli(server.port, "flushall")
        assert _enqueue(url, _lines(1)).returncode == 0
        base = _used_memory(server)
        # Room for one and a half batches. A call's arguments count while it
        # runs (its query buffer: about one batch's payloads), and a script is
        # refused only at its first write: the first batch starts under the limit
        # (base + payloads), the second does not (base + batch + payloads).
        redis_cli(server.port, "config", "set", "maxmemory", str(base + batch * 3 // 2))
        done = _enqueue(url, _lines(1500, start=1), "--json")
        assert done.returncode == 2, done.stderr
        stderr = done.stderr.decode()
        assert "enqueued the first 500 of 1,500 payloads" in stderr, stderr
        assert "OOM" in stderr and "Traceback" not in stderr
        printed = json.loads(done.stdout)
        assert len(printed) == 500
        redis_cli(server.port, "config", "set", "maxmemory", "0")
        ready, unknown = trio.run(_stored, url, [entry["id"] for entry in printed])
        # The one job of the first call and the 500 printed: no more, none missing.
        assert (ready, unknown) == (501, [])
