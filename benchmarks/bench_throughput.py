"""Throughput and latency of no-op jobs through a broker, in one process.

    python benchmarks/bench_throughput.py                      # memory and sqlite
    python benchmarks/bench_throughput.py --broker memory:// -n 100000
    python benchmarks/bench_throughput.py --broker sqlite:/tmp/bench.db --synchronous FULL
    python benchmarks/bench_throughput.py --json

Phases, each timed on its own:
  enqueue   N jobs in batches of --batch through app.enqueue_many (one broker call each)
  drain     one worker process (this one) runs the N queued no-op jobs; the clock stops
            when the last job's handler has run
  latency   with the worker idle, --latency-jobs jobs one after another: the time from
            the enqueue call to the handler starting (enqueue-to-start), and to the
            result being in hand (round trip), each job through app.enqueue_and_wait
            (one broker call: one round trip on Redis); p50 / p99 nearest-rank
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import trio

import guild
from guild.brokers import open_broker


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def bench(
    url: str, n: int, batch: int, concurrency: int, latency_jobs: int
) -> dict[str, object]:
    app = guild.Guild("bench")
    state = {"count": 0, "target": n, "started_at": 0.0}
    all_done = trio.Event()

    @app.worker("bench", concurrency=concurrency, timeout=60)
    async def noop(job: guild.Job) -> object:
        state["started_at"] = time.perf_counter()
        state["count"] += 1
        if state["count"] == state["target"]:
            all_done.set()
        return job.payload

    async with open_broker(url) as broker:
        payloads = list(range(n))
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            await app.enqueue_many("bench", payloads[i : i + batch], broker=broker)
        enqueue_s = time.perf_counter() - t0

        t1 = time.perf_counter()
        async with app.open(broker):
            await all_done.wait()
            drain_s = time.perf_counter() - t1
            to_start: list[float] = []
            round_trip: list[float] = []
            for i in range(latency_jobs + 20):
                state["target"] = -1
                t = time.perf_counter()
                if hasattr(app, "enqueue_and_wait"):
                    result = await app.enqueue_and_wait("bench", i, wait=10, broker=broker)
                else:  # an older guild (BASELINE_TREE): enqueue, then wait for the result
                    job = await app.enqueue("bench", i, broker=broker)
                    result = await app.result(job, wait=10, broker=broker)
                done = time.perf_counter()
                begun = state["started_at"]  # the handler ran before its result came
                assert result is not None and result.ok
                if i >= 20:  # warm-up excluded
                    to_start.append((begun - t) * 1000)
                    round_trip.append((done - t) * 1000)
    return {
        "broker": url.split(":", 1)[0],
        "jobs": n,
        "enqueue_jobs_per_s": round(n / enqueue_s),
        "drain_jobs_per_s": round(n / drain_s),
        "enqueue_to_start_ms": {
            "p50": round(percentile(to_start, 50), 3),
            "p99": round(percentile(to_start, 99), 3),
        },
        "round_trip_ms": {
            "p50": round(percentile(round_trip, 50), 3),
            "p99": round(percentile(round_trip, 99), 3),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--broker", action="append", help="broker URL (repeatable)")
    parser.add_argument("-n", type=int, default=50_000, help="jobs per run")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-jobs", type=int, default=300)
    parser.add_argument(
        "--synchronous",
        choices=["NORMAL", "ENQUEUE", "FULL"],
        default="NORMAL",
        help="SQLite durability for default sqlite runs",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    urls = args.broker
    tmp = Path(tempfile.mkdtemp(prefix="guild-bench-"))
    if not urls:
        urls = ["memory://", f"sqlite:///{tmp}/bench.db?synchronous={args.synchronous}"]
    rows = []
    for url in urls:
        rows.append(trio.run(bench, url, args.n, args.batch, args.concurrency, args.latency_jobs))
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(
        f"{'broker':8} {'jobs':>7} {'enqueue/s':>10} {'drain/s':>9} {'start p50':>10} {'p99':>8} {'rt p50':>8} {'p99':>8}"
    )
    for r in rows:
        s, rt = r["enqueue_to_start_ms"], r["round_trip_ms"]
        print(
            f"{r['broker']:8} {r['jobs']:>7} {r['enqueue_jobs_per_s']:>10,} {r['drain_jobs_per_s']:>9,}"
            f" {s['p50']:>8.3f}ms {s['p99']:>6.3f}ms {rt['p50']:>6.3f}ms {rt['p99']:>6.3f}ms"  # type: ignore[index]
        )
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}, guild {guild.__version__}")


if __name__ == "__main__":
    main()
