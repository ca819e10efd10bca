"""``guild migrate`` on a database an older guild wrote (schema version 2).

Every command refuses the old file with one line naming the command to run;
``--dry-run`` lists the steps; the migration backs the file up next to itself,
applies the steps, checks them, and the jobs are all still there.

    python examples/migrate_demo.py      # in an empty directory: it writes guild.db
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

# The schema as guild wrote it at version 2 (what an old deployment's file holds).
VERSION_2 = [
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL,
        attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
        enqueued_at REAL NOT NULL, not_before REAL, timeout REAL, key TEXT,
        trace_id TEXT NOT NULL, status TEXT NOT NULL, ready_at REAL NOT NULL,
        receipt TEXT, consumer TEXT, lease_expires REAL, error TEXT, traceback TEXT,
        died_at REAL, result TEXT, finished_at REAL, result_expires REAL,
        started INTEGER NOT NULL DEFAULT 0, interrupted INTEGER NOT NULL DEFAULT 0)""",
    "CREATE INDEX jobs_claim ON jobs (queue, status, ready_at, id)",
    "CREATE INDEX jobs_lease ON jobs (queue, status, lease_expires)",
    "CREATE INDEX jobs_dead ON jobs (status, died_at)",
    "CREATE INDEX jobs_expiry ON jobs (status, result_expires)",
    """CREATE TABLE idempotency (queue TEXT NOT NULL, key TEXT NOT NULL,
        job_id TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (queue, key))""",
    "CREATE TABLE queue_counts (queue TEXT PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)",
    "PRAGMA user_version = 2",
]


def guild(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guild", *args, "--broker", "sqlite:guild.db"],
        capture_output=True,
        text=True,
        check=False,
    )


def main() -> None:
    db = sqlite3.connect("guild.db", isolation_level=None)
    for statement in VERSION_2:
        db.execute(statement)
    db.executemany(
        "INSERT INTO jobs (id, queue, payload, max_attempts, enqueued_at, trace_id, status,"
        " ready_at) VALUES (?, 'emails', ?, 3, 1.0, 't', 'ready', 1.0)",
        [(f"job-{n}", f'{{"n": {n}}}') for n in range(3)],
    )
    db.close()

    refused = guild("stats")
    print(f"guild stats on the old file -> exit {refused.returncode}: {refused.stderr.strip()}")
    print(guild("migrate", "--dry-run").stdout.strip())
    done = guild("migrate")
    print(done.stdout.strip())
    backup = done.stdout.split("backup: ", 1)[1].splitlines()[0]
    print("backup exists:", Path(backup).exists())
    print(guild("stats").stdout.strip())


if __name__ == "__main__":
    main()
