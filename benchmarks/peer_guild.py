"""guild's adapter for the peer benchmark harness (../shared/bench/peers).

    PEERS_ADAPTER_PATH=$PWD/benchmarks bash ../shared/bench/peers/run.sh \\
        --peers guild,dramatiq,saq --python-for guild=.venv/bin/python \\
        --variant 'guild-p2:guild:{"processes": 2}'

``PEERS_ADAPTER_PATH`` must be absolute: the harness's client runs in its own folder.

Worker: ``guild run peer_guild:app --broker $BENCH_REDIS_URL`` (the real CLI, one
process; the ``processes`` setting passes ``--processes``, so the harness's
process-group CPU figure covers the supervisor and every child). Enqueue:
``app.enqueue_many`` in batches (one Redis call per batch).
Round trip: ``app.enqueue_and_wait(queue, i, wait=10)``: the enqueue script, the
await script and a blocking wait on the job's notify list (no pub/sub
subscription per job), sent as one pipeline: one Redis round trip.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import benchlib  # type: ignore[import-not-found]  # the harness's module, on its PYTHONPATH

import guild

NAME = "guild"
DIST = "guild"
LOOP = "trio"
S = benchlib.settings({"concurrency": 64, "batch": 1000, "processes": 1})
RESULT_METHOD = (
    "await app.enqueue_and_wait(queue, i, wait=10): enqueue script + await script + BLPOP,"
    " one pipelined round trip"
)
QUEUE = "bench"

app = guild.Guild("bench")


@app.worker(QUEUE, concurrency=S["concurrency"], timeout=60.0)
async def noop(job: guild.Job) -> int:
    x: int = job.payload
    benchlib.mark(x)
    return x


def worker_argv() -> list[str]:
    # The harness starts workers in its own folder with only itself on PYTHONPATH;
    # `env` (which execs, so the worker is still the process it measures) adds
    # this adapter's folder so `peer_guild:app` imports.
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return [
        "/usr/bin/env",
        f"PYTHONPATH={path}",
        benchlib.bin_path("guild"),
        "run",
        "peer_guild:app",
        "--broker",
        benchlib.REDIS_URL,
        "--concurrency",
        str(S["concurrency"]),
        "--processes",
        str(S["processes"]),
        "--log-level",
        "warning",
    ]


def worker_desc() -> str:
    processes = S["processes"]
    count = "1 process" if processes == 1 else f"--processes {processes}"
    return f"`guild run peer_guild:app`, {count}, concurrency={S['concurrency']} each"


def enqueue_method() -> str:
    return f"`app.enqueue_many`, {S['batch']} jobs per call (one Lua script call each)"


class Client:
    def __init__(self, broker: guild.Broker) -> None:
        self.broker = broker

    async def enqueue_many(self, ids: Sequence[int]) -> None:
        batch = S["batch"]
        for start in range(0, len(ids), batch):
            await app.enqueue_many(QUEUE, ids[start : start + batch], broker=self.broker)

    async def roundtrip(self, i: int) -> int:
        result = await app.enqueue_and_wait(QUEUE, i, wait=10, broker=self.broker)
        if result is None or not result.ok:
            raise RuntimeError(f"job {i} did not finish: {result}")
        value: int = result.value
        return value


@asynccontextmanager
async def client() -> AsyncIterator[Client]:
    async with guild.open_broker(benchlib.REDIS_URL) as broker:
        yield Client(broker)
