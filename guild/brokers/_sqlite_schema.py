"""The SQLite schema as ordered migrations: ``(version, statements)``.

A database records the last version applied in ``PRAGMA user_version``; opening
it applies every later migration in one transaction. A new version appends an
entry here and never edits an old one.
"""

from __future__ import annotations

MIGRATIONS: list[tuple[int, list[str]]] = [
    (
        1,
        [
            """
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                queue TEXT NOT NULL,
                payload TEXT NOT NULL,
                attempt INTEGER NOT NULL DEFAULT 0,
                max_attempts INTEGER NOT NULL,
                enqueued_at REAL NOT NULL,
                not_before REAL,
                timeout REAL,
                key TEXT,
                trace_id TEXT NOT NULL,
                status TEXT NOT NULL,          -- ready | in_flight | done | dead
                ready_at REAL NOT NULL,        -- ready before this time counts as delayed
                receipt TEXT,
                consumer TEXT,
                lease_expires REAL,
                error TEXT,
                traceback TEXT,
                died_at REAL,
                result TEXT,
                finished_at REAL,
                result_expires REAL
            )
            """,
            "CREATE INDEX jobs_claim ON jobs (queue, status, ready_at, id)",
            "CREATE INDEX jobs_lease ON jobs (queue, status, lease_expires)",
            "CREATE INDEX jobs_dead ON jobs (status, died_at)",
            "CREATE INDEX jobs_expiry ON jobs (status, result_expires)",
            """
            CREATE TABLE idempotency (
                queue TEXT NOT NULL,
                key TEXT NOT NULL,
                job_id TEXT NOT NULL,
                expires REAL NOT NULL,
                PRIMARY KEY (queue, key)
            )
            """,
            "CREATE TABLE queue_counts (queue TEXT PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)",
        ],
    ),
    (
        2,
        [
            # Attempts are counted when a run starts, not at claim: ``started`` says
            # whether the holder's run is counted in ``attempt``. Rows in flight now
            # were claimed under version 1, which counted at claim.
            "ALTER TABLE jobs ADD COLUMN started INTEGER NOT NULL DEFAULT 0",
            "UPDATE jobs SET started = 1 WHERE status = 'in_flight'",
            # The job's last started run never finished (its lease expired): the
            # next run is never started at claim, and its worker runs it alone.
            "ALTER TABLE jobs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",
            # max_attempts 0 stands for "the worker's" (Job.max_attempts None): the
            # column is NOT NULL, and SQLite cannot drop that without a table copy.
        ],
    ),
]
