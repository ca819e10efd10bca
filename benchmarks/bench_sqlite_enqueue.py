"""SQLite enqueue, one job per call, one caller: what Huey's ``task(x)`` measures.

    python benchmarks/bench_sqlite_enqueue.py                  # both APIs, every setting
    python benchmarks/bench_sqlite_enqueue.py -n 5000 --rounds 5 --dir /var/tmp
    python benchmarks/bench_sqlite_enqueue.py --api sync --synchronous FULL --json
    python benchmarks/bench_sqlite_enqueue.py --api async --callers 8    # 8 tasks at once

Each call stores one job and returns only once it is committed, so every job is
its own transaction: at ``synchronous=ENQUEUE`` (the default) and ``FULL`` each
is an fsync of the WAL, as in Huey's SqliteHuey (WAL, SQLite's default
``synchronous=FULL``), which is the durability to compare it at. ``sync`` is
``guild.Client.enqueue`` from a plain thread (as Huey is called); ``async`` is
``guild.AsyncClient.enqueue`` awaited under Trio. Runs alternate (every API and
setting once per round, on a fresh file each) so a busy machine weighs on all
of them alike; the median of the rounds is reported. The file sits in
``--dir``: the disk's fsync is the figure's floor at FULL, so compare with a
peer on the same disk.

``--callers K`` (async only) runs K tasks that each enqueue one job per call,
N in all: calls that wait for the connection together share a commit (group
commit), so at FULL they share an fsync, which one caller cannot.

``--floor`` measures, in ``--dir``, what one caller cannot go below: a 4 KiB
``pwrite`` + ``fdatasync`` on a preallocated file, and plain ``sqlite3`` one-row
commits (``BEGIN IMMEDIATE``, ``INSERT``, ``COMMIT``) in WAL at FULL and NORMAL.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

import trio

import guild


def _fresh(directory: Path, name: str) -> Path:
    path = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def run_sync(path: Path, synchronous: str, n: int) -> float:
    with guild.Client(f"sqlite:{path}?synchronous={synchronous}") as client:
        client.enqueue("bench", 0)  # the file made, the schema written: not timed
        began = time.perf_counter()
        for i in range(n):
            client.enqueue("bench", i)
        return n / (time.perf_counter() - began)


def run_async(path: Path, synchronous: str, n: int, callers: int = 1) -> float:
    async def main() -> float:
        async with guild.AsyncClient(f"sqlite:{path}?synchronous={synchronous}") as client:
            await client.enqueue("bench", 0)

            async def caller(first: int) -> None:
                for i in range(first, n, callers):
                    await client.enqueue("bench", i)

            began = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for first in range(callers):
                    nursery.start_soon(caller, first)
            return n / (time.perf_counter() - began)

    return trio.run(main)


RUNS = {"sync": run_sync, "async": run_async}


def floor(directory: Path, n: int) -> dict[str, float]:
    """Per second: fdatasync of one rewritten 4 KiB block, and bare SQLite one-row commits."""
    found: dict[str, float] = {}
    path = _fresh(directory, "floor.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"\0" * (1 << 22))
        os.fsync(fd)
        block = b"x" * 4096
        began = time.perf_counter()
        for i in range(n):
            os.pwrite(fd, block, (i * 4096) % (1 << 22))
            os.fdatasync(fd)
        found["pwrite+fdatasync"] = n / (time.perf_counter() - began)
    finally:
        os.close(fd)
        path.unlink()
    for synchronous in ("FULL", "NORMAL"):
        db = sqlite3.connect(_fresh(directory, f"floor-{synchronous}.db"), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={synchronous}")
            db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
            began = time.perf_counter()
            for i in range(n):
                db.execute("BEGIN IMMEDIATE")
                db.execute("INSERT INTO t (v) VALUES (?)", (str(i),))
                db.execute("COMMIT")
            found[f"sqlite WAL {synchronous} 1-row commit"] = n / (time.perf_counter() - began)
        finally:
            db.close()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=3000, help="jobs per run (default 3000)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--api", nargs="+", choices=list(RUNS), default=list(RUNS))
    parser.add_argument(
        "--synchronous",
        nargs="+",
        choices=["ENQUEUE", "FULL", "NORMAL"],
        default=["ENQUEUE", "FULL", "NORMAL"],
    )
    parser.add_argument("--callers", type=int, default=1, help="async callers at once")
    parser.add_argument("--dir", type=Path, help="where the files go (default: a temp dir)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--floor", action="store_true", help="also the disk's fsync floor")
    args = parser.parse_args()
    directory = args.dir or Path(tempfile.mkdtemp(prefix="guild-bench-enqueue-"))
    rates: dict[str, list[float]] = {}
    for _ in range(args.rounds):
        if args.floor:
            for name, rate in floor(directory, args.n).items():
                rates.setdefault(name, []).append(rate)
        for api in args.api:
            for synchronous in args.synchronous:
                path = _fresh(directory, f"enqueue-{api}-{synchronous}.db")
                if api == "async":
                    rate = run_async(path, synchronous, args.n, args.callers)
                else:
                    rate = RUNS[api](path, synchronous, args.n)
                rates.setdefault(f"{api} {synchronous}", []).append(rate)
    found = {
        name: {"median_per_s": round(statistics.median(r)), "runs": [round(x) for x in r]}
        for name, r in rates.items()
    }
    if args.json:
        print(json.dumps({"n": args.n, "dir": str(directory), "results": found}, indent=2))
        return
    for name, row in found.items():
        print(f"{name:30} {row['median_per_s']:>8,}/s  (runs: {row['runs']})")


if __name__ == "__main__":
    main()
