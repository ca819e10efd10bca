"""The cost of observability: no-op jobs through the memory broker, instruments off vs on.

    python benchmarks/bench_observability.py                 # 50,000 jobs, 5 rounds each
    python benchmarks/bench_observability.py -n 100000 --rounds 7
    python benchmarks/bench_observability.py --log-every-job # successes logged at info too
    python benchmarks/bench_observability.py --json

"off" is a bare app. "on" is what `guild run --http` gives: Prometheus
metrics, the health monitor, the /events hub, JSON logs at level info (to a
file), and the HTTP server (its sampler and flusher included) on a free port.
Rounds alternate off/on so that both see the same machine; each round times
the drain of N queued jobs by one worker (concurrency 16). Reported: jobs/s
(median, min, max over rounds) per mode, and how much slower "on" is
(median against median). No-op jobs are the worst case: any real work per
job shrinks the relative cost.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import trio

import guild
from guild.observability import LoggingInstrument, configure_logging, observe, serve_http


async def one_round(n: int, observed: bool, log_every_job: bool) -> float:
    app = guild.Guild("bench")
    state = {"count": 0}
    all_done = trio.Event()

    @app.worker("bench", concurrency=16, timeout=60)
    async def noop(job: guild.Job) -> None:
        state["count"] += 1
        if state["count"] == n:
            all_done.set()

    if observed:
        if log_every_job:
            app.instruments.add(LoggingInstrument(done_level="info"))
        observe(app)  # metrics, monitor, hub, and a LoggingInstrument unless one is there
    broker = guild.MemoryBroker()
    await app.enqueue_many("bench", list(range(n)), broker=broker)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_http, app, port=0)) if observed else 0
        started = time.perf_counter()
        async with app.open(broker):
            await all_done.wait()
            elapsed = time.perf_counter() - started
        if observed:
            await _check_counts(port, n)
        nursery.cancel_scope.cancel()
    await broker.aclose()
    return n / elapsed


async def _check_counts(port: int, n: int) -> None:
    # The numbers only count if the instruments saw every job.
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("guild_jobs_processed_total{"))
    assert float(line.rsplit(" ", 1)[1]) == n, line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=50_000, help="jobs per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per mode")
    parser.add_argument("--log-every-job", action="store_true", help="log successes at info")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, (Path(tmp) / "guild.log").open("w") as log:
        configure_logging(json=True, level="info", stream=log)
        rates: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(args.rounds):
            for mode in ("off", "on"):
                rates[mode].append(trio.run(one_round, args.n, mode == "on", args.log_every_job))
    summary = {
        mode: {
            "median": statistics.median(values),
            "min": min(values),
            "max": max(values),
        }
        for mode, values in rates.items()
    }
    slower = 1 - summary["on"]["median"] / summary["off"]["median"]
    if args.json:
        print(json.dumps({"jobs": args.n, "rounds": args.rounds, **summary, "slower": slower}))
        return
    print(f"{args.n:,} no-op jobs, memory broker, {args.rounds} rounds per mode")
    for mode, figures in summary.items():
        print(
            f"  observability {mode:3}  {figures['median']:>9,.0f} jobs/s median"
            f"  (min {figures['min']:,.0f}, max {figures['max']:,.0f})"
        )
    print(f"  cost: {slower:.1%} fewer jobs/s with metrics, health, events and logs on")


if __name__ == "__main__":
    main()
