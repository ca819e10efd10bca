"""A worker and a producer on a single Redis run without loading coredis: every
call they make goes over the lean connections (``_redis_wire``); coredis is
loaded only when something asks for its client."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._first_job import probe_env, probe_run
from tests._redis_server import RedisServer, running_redis_server


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with running_redis_server() as running:
        yield running


_PRODUCER = """
import json, sys
import trio
import guild

async def main(url):
    seen = {}
    async with guild.open_broker(url) as broker:
        [job] = await broker.enqueue([guild.Job(queue="q", payload=21)])
        result = await broker.get_result(job.id, wait=30)
        seen["value"] = None if result is None else result.value
        seen["again"] = (await broker.get_result(job.id)).value
        seen["many"] = sorted(await broker.get_results([job.id]))
        seen["status"] = (await broker.job_info(job.id)).status.value
        seen["stats"] = (await broker.stats(["q"]))["q"].done
        seen["coredis_before"] = "coredis" in sys.modules
        client = await broker.redis_client()
        seen["epoch"] = (await client.get(broker.prefix + ":epoch")) is not None
        seen["coredis_after"] = "coredis" in sys.modules
    print(json.dumps(seen))

trio.run(main, sys.argv[1])
"""


def test_a_worker_and_a_producer_on_redis_never_load_coredis(
    server: RedisServer, tmp_path: Path
) -> None:
    with probe_run(tmp_path, server.url) as first_job:
        produced = subprocess.run(
            [sys.executable, "-c", _PRODUCER, server.url],
            cwd=tmp_path,
            env=probe_env(tmp_path),
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert produced.returncode == 0, produced.stderr
        loaded = first_job()
    assert "guild.brokers.redis" in loaded  # the probe ran on the Redis broker
    assert "coredis" not in loaded
    seen = json.loads(produced.stdout.splitlines()[-1])
    assert seen == {
        "value": 42,
        "again": 42,
        "many": [seen["many"][0]],
        "status": "done",
        "stats": 1,
        "coredis_before": False,
        # Asked for, the client is made then, and works.
        "epoch": True,
        "coredis_after": True,
    }
