"""Quickstart: a worker on the embedded SQLite broker, start to finish.

Enqueues 1,000 jobs into a SQLite file, runs the worker in this program's own
nursery until every job has finished, and prints what happened: results, one
job that was retried and recovered, one that was dead-lettered with its reason.

    python examples/quickstart.py [path/to/file.db]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import trio
import trio.lowlevel

import guild

app = guild.Guild("quickstart")
flaky_failures: dict[str, int] = {}


@app.worker(
    "squares",
    concurrency=16,
    max_attempts=3,
    retry=guild.RetryPolicy(base=0.05, max_delay=0.2),
)
async def square(job: guild.Job) -> int:
    n = job.payload["n"]
    if not isinstance(n, int):
        raise TypeError(f"n must be an integer, got {n!r}")
    if n == 7 and flaky_failures.setdefault(job.id, 0) < 1:
        flaky_failures[job.id] += 1
        raise ConnectionError("flaky dependency (recovers on the next attempt)")
    await trio.lowlevel.checkpoint()
    return n * n


async def main(path: Path) -> None:
    url = f"sqlite:///{path}"
    async with guild.open_broker(url) as broker:
        payloads: list[dict[str, object]] = [{"n": i} for i in range(999)]
        payloads.append({"n": "not a number"})
        started = time.perf_counter()
        jobs = await app.enqueue_many("squares", payloads, broker=broker)
        print(f"enqueued {len(jobs)} jobs into {path}")
        async with app.open(broker):
            results = [await broker.get_result(job.id, wait=60) for job in jobs]
        elapsed = time.perf_counter() - started
        done = [r for r in results if r is not None and r.ok]
        print(f"processed {len(done)} jobs in {elapsed:.2f}s; 12 squared is {results[12].value}")  # type: ignore[union-attr]
        seven = results[7]
        assert seven is not None
        print(f"job for n=7 failed once, then succeeded on attempt {seven.attempts}")
        for letter in await broker.list_dead("squares"):
            print(f"dead letter {letter.job.id}: {letter.error}")
        stats = (await broker.stats(["squares"]))["squares"]
        print(
            f"queue 'squares': done={stats.done} dead={stats.dead}"
            f" ready={stats.ready} in_flight={stats.in_flight}"
        )


if __name__ == "__main__":
    if len(sys.argv) > 1:
        target = Path(sys.argv[1]).resolve()
    else:
        target = Path(tempfile.mkdtemp(prefix="guild-quickstart-")) / "guild.db"
    trio.run(main, target)
