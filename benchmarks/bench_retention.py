"""Retention, measured: memory broker RSS, SQLite purge lock holds, Redis memory.

    python benchmarks/bench_retention.py memory                # 500,000 jobs, 2 s retention
    python benchmarks/bench_retention.py memory --retention 86400   # the old default, for contrast
    python benchmarks/bench_retention.py sqlite -n 500000      # longest write-lock hold of a purge
    python benchmarks/bench_retention.py redis -n 200000 --retention 60
    python benchmarks/bench_retention.py redis --url redis://127.0.0.1:6379/0

``memory``: one process runs a worker (``Guild`` on a ``MemoryBroker`` with
``Retention(results=S, done=S)``) while it enqueues ``n`` no-op jobs, 1,000 per
call, keeping at most 20,000 waiting; it prints the resident set size
(``/proc/self/statm``) after every 100,000 jobs done. Flat means retention
frees what it should: compare the figure at 100,000 with the one at 500,000.

``sqlite``: ``n`` done rows past their retention are written into a fresh
database (straight SQL: the point is the purge, not the acks), then deleted the
way the broker deletes them: retention's sweep (``_sqlite_purge.expired``), and
again ``purge(queue, [done])``, one ``BEGIN IMMEDIATE … COMMIT`` per batch with
the broker's pause between batches. Each batch's lock hold (``BEGIN IMMEDIATE``
returning to ``COMMIT`` returning) is timed, in wall-clock and CPU time. The WAL
checkpoint, which SQLite would run inside ``COMMIT`` after releasing the lock,
is run and timed on its own between batches, so it does not count as a hold.
Meanwhile a second connection keeps asking for the write lock (as another
process's claim would) and records how long it waited. For contrast, one
unbatched ``DELETE`` of the same rows is timed too.

``redis``: a worker runs ``n`` no-op jobs on Redis with ``result_ttl`` and
``done_ttl`` of ``--retention`` seconds (given in the URL); it prints Redis'
``used_memory`` at the baseline (broker open, no jobs), after the run, and
after the retention window (polled every second until the job keys are gone,
at most ``--retention`` + 30 s). Without ``--url`` it starts a redis-server of
its own on a free port (``$GUILD_REDIS_SERVER`` or ``redis-server`` on PATH).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio
from _redis_server import redis_server

import guild
from guild.brokers import MemoryBroker, open_broker
from guild.brokers import _sqlite_purge as sqlite_purge
from guild.observability import configure_logging

BATCH = 1000
MAX_WAITING = 20_000


def rss_mb() -> float:
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1 << 20)


async def _run_jobs(
    app: guild.Guild, broker: guild.Broker, n: int, on_every: Any, every: int
) -> float:
    """Enqueue and drain ``n`` no-op jobs on queue ``bench``; returns seconds taken."""
    done = {"count": 0}
    finished = trio.Event()
    marks: list[int] = list(range(every, n + 1, every))

    @app.worker("bench", concurrency=64, timeout=60)
    async def noop(job: guild.Job) -> object:
        done["count"] += 1
        if done["count"] >= n:
            finished.set()
        return None

    started = time.perf_counter()
    async with app.open(broker):
        sent = 0
        while sent < n:
            # Back-pressure, looked at every 10 ms: an event per job would cost more.
            while sent - done["count"] > MAX_WAITING:  # noqa: ASYNC110
                await trio.sleep(0.01)
            size = min(BATCH, n - sent)
            await app.enqueue_many("bench", [{"i": sent + i} for i in range(size)], broker=broker)
            sent += size
            while marks and done["count"] >= marks[0]:
                await on_every(marks.pop(0))
        await finished.wait()
        while marks:
            await on_every(marks.pop(0))
        # Let the last acks land before the app drains.
        await trio.sleep(0.2)
    return time.perf_counter() - started


async def bench_memory(n: int, retention: float) -> dict[str, Any]:
    kept = guild.Retention(results=retention, done=retention)
    broker = MemoryBroker(retention=kept)
    app = guild.Guild("bench-memory")
    figures: list[dict[str, Any]] = []

    async def report(count: int) -> None:
        figures.append({"jobs_done": count, "rss_mb": round(rss_mb(), 1), "held": repr(broker)})
        print(f"{count:>9,} jobs done  RSS {figures[-1]['rss_mb']:>7.1f} MiB  {broker!r}")

    print(f"memory broker, retention {retention:g} s, {n:,} jobs")
    seconds = await _run_jobs(app, broker, n, report, 100_000)
    await broker.aclose()
    return {
        "broker": "memory",
        "retention_s": retention,
        "seconds": round(seconds, 1),
        "rss": figures,
    }


def _hold(
    db: sqlite3.Connection,
    work: Any,
    cpu: list[float] | None = None,
    commits: list[float] | None = None,
) -> tuple[float, Any]:
    """Run ``work`` in one write transaction: (seconds the write lock was held, what it returned).

    The time runs from ``BEGIN IMMEDIATE`` returning to ``COMMIT`` returning, so it
    includes the WAL auto-checkpoint SQLite runs inside COMMIT (after it released
    the lock): an upper bound. ``cpu`` gets the thread's CPU seconds for the same
    span, which a busy machine's scheduling does not inflate.
    """
    db.execute("BEGIN IMMEDIATE")
    locked, cpu_start = time.perf_counter(), time.thread_time()
    deleted = work(db)
    committing = time.perf_counter()
    db.execute("COMMIT")
    if commits is not None:
        commits.append(time.perf_counter() - committing)
    if cpu is not None:
        cpu.append(time.thread_time() - cpu_start)
    return time.perf_counter() - locked, deleted


async def _fill_sqlite(path: Path, n: int) -> None:
    async with open_broker(f"sqlite:{path}"):
        pass  # the schema, made the broker's way
    db = sqlite3.connect(path, isolation_level=None)
    past = time.time() - 10
    rows = (
        (f"J{i:09d}", "bench", "null", 1, 1, past - 5, "t", past - 5, "null", past, past)
        for i in range(n)
    )
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO jobs (id, queue, payload, attempt, max_attempts, enqueued_at, trace_id,"
        " ready_at, result, finished_at, result_expires, status)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,'done')",
        rows,
    )
    db.execute("COMMIT")
    db.close()


def _holds(path: Path, work: Any) -> dict[str, Any]:
    """Delete in batches as the broker does, while another connection keeps asking
    for the write lock (as a claim would); both sides' figures are returned."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=NORMAL")
    db.execute("PRAGMA wal_autocheckpoint=0")
    checkpoints: list[float] = [0.0]
    holds: list[float] = []
    cpu: list[float] = []
    commits: list[float] = []
    waits: list[float] = []
    stop = threading.Event()

    def writer() -> None:
        other = sqlite3.connect(path, isolation_level=None, timeout=30)
        while not stop.is_set():
            asked = time.perf_counter()
            other.execute("BEGIN IMMEDIATE")
            waits.append(time.perf_counter() - asked)
            other.execute("COMMIT")
            time.sleep(0.001)
        other.close()

    probe = threading.Thread(target=writer)
    probe.start()
    total = 0
    try:
        while True:
            held, swept = _hold(db, work, cpu, commits)
            holds.append(held)
            total += swept.rows
            if not swept.more:
                break
            checkpoint = time.perf_counter()
            # What SQLite's auto-checkpoint does inside COMMIT, after it released
            # the write lock: run here on its own, so the hold measured is the lock's.
            if (path.parent / (path.name + "-wal")).stat().st_size > 1000 * 4096:
                db.execute("PRAGMA wal_checkpoint(PASSIVE)")
                checkpoints.append(time.perf_counter() - checkpoint)
            time.sleep(sqlite_purge.gap(held))  # as the broker's purge does
    finally:
        stop.set()
        probe.join()
        db.close()
    return {
        "rows": total,
        "batches": len(holds),
        "longest_ms": round(max(holds) * 1000, 2),
        "median_ms": round(statistics.median(holds) * 1000, 2),
        "p99_ms": round(sorted(holds)[int(0.99 * (len(holds) - 1))] * 1000, 2),
        "over_50ms": sum(1 for h in holds if h > 0.05),
        # Of the holds over 50 ms, the part spent in COMMIT (writing the WAL).
        "over_50ms_commit_ms": [
            round(c * 1000, 1) for h, c in zip(holds, commits, strict=True) if h > 0.05
        ],
        "longest_cpu_ms": round(max(cpu) * 1000, 2),
        "longest_checkpoint_ms": round(max(checkpoints) * 1000, 2),
        "other_writer_longest_wait_ms": round(max(waits) * 1000, 2),
        "other_writer_p99_wait_ms": round(sorted(waits)[int(0.99 * (len(waits) - 1))] * 1000, 2),
    }


async def bench_sqlite(n: int) -> dict[str, Any]:
    directory = Path(tempfile.mkdtemp(prefix="guild-bench-retention-"))
    try:
        kept = guild.Retention(results=1, done=1)
        found: dict[str, Any] = {"broker": "sqlite", "rows": n, "batch": sqlite_purge.BATCH}
        await _fill_sqlite(directory / "a.db", n)
        now = time.time()
        found["retention_sweep"] = _holds(
            directory / "a.db", lambda db: sqlite_purge.expired(db, now, kept)
        )
        await _fill_sqlite(directory / "b.db", n)
        now = time.time()
        done = [guild.JobStatus.DONE]
        found["purge_done"] = _holds(
            directory / "b.db", lambda db: sqlite_purge.purge(db, "bench", done, now, None)
        )
        await _fill_sqlite(directory / "c.db", n)
        now = time.time()
        found["unbatched_delete_ms"] = round(
            _hold(
                sqlite3.connect(directory / "c.db", isolation_level=None),
                lambda db: (
                    db.execute(
                        "DELETE FROM jobs WHERE status = 'done' AND result_expires <= ?", (now,)
                    ).rowcount
                ),
            )[0]
            * 1000,
            1,
        )
        for name in ("retention_sweep", "purge_done"):
            row = found[name]
            print(
                f"{name:16} {row['rows']:>9,} rows in {row['batches']:>5} batches: lock held"
                f" longest {row['longest_ms']:.2f} ms ({row['over_50ms']} over 50 ms, of which"
                f" COMMIT took {row['over_50ms_commit_ms']} ms),"
                f" p99 {row['p99_ms']:.2f} ms, median"
                f" {row['median_ms']:.2f} ms (CPU: longest {row['longest_cpu_ms']:.2f} ms);"
                f" another writer waited p99 {row['other_writer_p99_wait_ms']:.2f} ms,"
                f" at most {row['other_writer_longest_wait_ms']:.2f} ms; WAL checkpoints"
                f" (no write lock) up to {row['longest_checkpoint_ms']:.2f} ms"
            )
        print(f"{'one DELETE':16} {n:>9,} rows at once: {found['unbatched_delete_ms']:.1f} ms")
        return found
    finally:
        shutil.rmtree(directory, ignore_errors=True)


async def _used_memory(broker: Any) -> int:
    info = await broker.client.info("memory")
    return int(info["used_memory"])


async def _job_keys(broker: Any) -> int:
    count = 0
    async for _ in broker.client.scan_iter(match=f"{broker.prefix}:job:*", count=1000):
        count += 1
    return count


async def bench_redis(url: str, n: int, retention: float) -> dict[str, Any]:
    sep = "&" if "?" in url else "?"
    full = f"{url}{sep}result_ttl={retention:g}&done_ttl={retention:g}"
    async with open_broker(full) as broker:
        app = guild.Guild("bench-redis")
        await broker.stats()  # the connections and scripts, before the baseline
        baseline = await _used_memory(broker)
        print(f"redis, retention {retention:g} s, {n:,} jobs")
        print(f"baseline            used_memory {baseline / 1e6:>8.2f} MB")

        async def report(count: int) -> None:
            used = await _used_memory(broker)
            print(f"{count:>9,} jobs done  used_memory {used / 1e6:>8.2f} MB")

        seconds = await _run_jobs(app, broker, n, report, 50_000)
        finished = time.time()
        after_run = await _used_memory(broker)
        print(f"after the run       used_memory {after_run / 1e6:>8.2f} MB ({seconds:.0f} s)")
        with trio.move_on_after(retention + 30):
            # Redis expires keys on its own: nothing announces it, so poll.
            while time.time() < finished + retention or await _job_keys(broker):  # noqa: ASYNC110
                await trio.sleep(1.0)
        waited = time.time() - finished
        after_window = await _used_memory(broker)
        left = await _job_keys(broker)
        print(
            f"after the window    used_memory {after_window / 1e6:>8.2f} MB"
            f" ({waited:.0f} s after the last job; {left} job keys left)"
        )
        return {
            "broker": "redis",
            "jobs": n,
            "retention_s": retention,
            "used_memory": {
                "baseline": baseline,
                "after_run": after_run,
                "after_window": after_window,
            },
            "job_keys_left": left,
            "run_s": round(seconds, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("which", choices=["memory", "sqlite", "redis"])
    parser.add_argument("-n", type=int, help="jobs (memory 500,000; sqlite 500,000; redis 200,000)")
    parser.add_argument("--retention", type=float, help="seconds (memory 2, redis 60)")
    parser.add_argument("--url", help="redis URL (default: a redis-server of its own)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    configure_logging(level="warning")  # the worker's info logs would bury the figures
    if args.which == "memory":
        found = trio.run(bench_memory, args.n or 500_000, args.retention or 2.0)
    elif args.which == "sqlite":
        found = trio.run(bench_sqlite, args.n or 500_000)
    elif args.url:
        found = trio.run(bench_redis, args.url, args.n or 200_000, args.retention or 60.0)
    else:
        with redis_server() as url:
            found = trio.run(bench_redis, url, args.n or 200_000, args.retention or 60.0)
    if args.json:
        print(json.dumps(found, indent=2))


if __name__ == "__main__":
    main()
