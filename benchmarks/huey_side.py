"""Huey's half of ``bench_vs_huey.py``; runs under an interpreter that has ``huey`` installed.

    HUEY_BENCH_DB=/tmp/h.db HUEY_BENCH_SYNCHRONOUS=FULL python huey_side.py enqueue N [CALLERS]
    HUEY_BENCH_DB=... HUEY_BENCH_SYNCHRONOUS=... BENCH_FIFO=... \\
        python -m huey.bin.huey_consumer huey_side.huey -w 2 -k thread ...

``SqliteHuey`` as shipped: WAL, its own schema, one commit per enqueue and per
dequeue. ``fsync=None`` (Huey's default) leaves SQLite's default, ``synchronous=FULL``;
Huey's ``fsync=False`` means ``OFF``, so ``NORMAL`` (guild's default) is set here
after Huey opens each connection, to compare at equal durability both ways.
With CALLERS above 1, that many threads call the task at once (N split among
them), as a web server's request threads would: Huey's storage serializes them
on its one connection, one commit each.
The job body records its id and CLOCK_MONOTONIC on a FIFO the driver reads (the
same 16-byte records guild's side writes).
"""

from __future__ import annotations

import json
import os
import sqlite3
import struct
import sys
import time

from _callers import timed_threads
from huey import SqliteHuey  # type: ignore[import-not-found]
from huey.storage import SqliteStorage  # type: ignore[import-not-found]

SYNCHRONOUS = os.environ.get("HUEY_BENCH_SYNCHRONOUS", "FULL").upper()
if SYNCHRONOUS not in ("NORMAL", "FULL"):
    raise SystemExit(f"HUEY_BENCH_SYNCHRONOUS must be NORMAL or FULL, got {SYNCHRONOUS!r}")
RECORD = struct.Struct("<QQ")


class _Storage(SqliteStorage):  # type: ignore[misc]
    def _create_connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection = super()._create_connection()
        conn.execute(f"pragma synchronous={SYNCHRONOUS}")
        return conn


class _Huey(SqliteHuey):  # type: ignore[misc]
    storage_class = _Storage


huey = _Huey("bench", filename=os.environ["HUEY_BENCH_DB"])
_fifo: list[int] = []


@huey.task()  # type: ignore[untyped-decorator]
def noop(x: int) -> int:
    if not _fifo:
        _fifo.append(os.open(os.environ["BENCH_FIFO"], os.O_WRONLY))
    os.write(_fifo[0], RECORD.pack(x, time.monotonic_ns()))
    return x


def enqueue(n: int, callers: int = 1) -> dict[str, object]:
    conn = huey.storage.conn
    pragmas = {
        "synchronous": conn.execute("pragma synchronous").fetchone()[0],
        "journal_mode": conn.execute("pragma journal_mode").fetchone()[0],
    }
    timed = timed_threads(noop, n, callers)
    if len(huey) != n:
        raise SystemExit(f"huey holds {len(huey)} queued tasks after enqueueing {n}")
    import huey as huey_module

    return {
        **timed,
        "pragmas": pragmas,
        "version": huey_module.__version__,
    }


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4) or sys.argv[1] != "enqueue":
        raise SystemExit("usage: huey_side.py enqueue N [CALLERS]")
    # Through the module, not __main__: Huey names a task by its module, and the
    # consumer imports ``huey_side``.
    import huey_side

    callers = int(sys.argv[3]) if len(sys.argv) == 4 else 1
    print(json.dumps(huey_side.enqueue(int(sys.argv[2]), callers)))
