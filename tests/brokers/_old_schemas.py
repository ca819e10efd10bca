"""The SQLite schema of every released version, as DDL written out here.

Recorded, not imported from ``guild.brokers._sqlite_schema``: a test builds an
old file from what that version's guild really wrote, so an edit to an old
migration in the code (which must never happen) shows up as a failing test.
A new schema version adds its statements here, as the next entry.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

SCHEMAS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE jobs (
            id TEXT PRIMARY KEY, queue TEXT NOT NULL, payload TEXT NOT NULL,
            attempt INTEGER NOT NULL DEFAULT 0, max_attempts INTEGER NOT NULL,
            enqueued_at REAL NOT NULL, not_before REAL, timeout REAL, key TEXT,
            trace_id TEXT NOT NULL, status TEXT NOT NULL, ready_at REAL NOT NULL,
            receipt TEXT, consumer TEXT, lease_expires REAL, error TEXT, traceback TEXT,
            died_at REAL, result TEXT, finished_at REAL, result_expires REAL)""",
        "CREATE INDEX jobs_claim ON jobs (queue, status, ready_at, id)",
        "CREATE INDEX jobs_lease ON jobs (queue, status, lease_expires)",
        "CREATE INDEX jobs_dead ON jobs (status, died_at)",
        "CREATE INDEX jobs_expiry ON jobs (status, result_expires)",
        """CREATE TABLE idempotency (queue TEXT NOT NULL, key TEXT NOT NULL,
            job_id TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (queue, key))""",
        "CREATE TABLE queue_counts (queue TEXT PRIMARY KEY, done INTEGER NOT NULL DEFAULT 0)",
    ],
    2: [
        "ALTER TABLE jobs ADD COLUMN started INTEGER NOT NULL DEFAULT 0",
        "UPDATE jobs SET started = 1 WHERE status = 'in_flight'",
        "ALTER TABLE jobs ADD COLUMN interrupted INTEGER NOT NULL DEFAULT 0",
    ],
    3: [
        """CREATE TABLE ledger_counts (namespace TEXT NOT NULL, key TEXT NOT NULL,
            name TEXT NOT NULL, value REAL NOT NULL, PRIMARY KEY (namespace, key, name))""",
        """CREATE TABLE ledger_marks (namespace TEXT NOT NULL, key TEXT NOT NULL,
            value TEXT NOT NULL, expires REAL NOT NULL, PRIMARY KEY (namespace, key))""",
        "CREATE INDEX ledger_marks_expiry ON ledger_marks (expires)",
    ],
    4: [
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX jobs_cancel ON jobs (status) WHERE cancel_requested = 1",
        "ALTER TABLE queue_counts ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0",
    ],
    5: [
        """CREATE TABLE workflows (id TEXT PRIMARY KEY, name TEXT NOT NULL,
            status TEXT NOT NULL, spec TEXT NOT NULL, state TEXT NOT NULL,
            version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL)""",
        "CREATE INDEX workflows_age ON workflows (created_at, id)",
        "CREATE INDEX workflows_status ON workflows (status, created_at, id)",
    ],
    6: [
        "ALTER TABLE jobs ADD COLUMN started_at REAL",
        "ALTER TABLE jobs ADD COLUMN progress REAL",
        "ALTER TABLE jobs ADD COLUMN progress_message TEXT",
        "ALTER TABLE jobs ADD COLUMN progress_at REAL",
    ],
    7: [
        """CREATE TABLE rollouts (queue TEXT PRIMARY KEY, share REAL NOT NULL,
            version INTEGER NOT NULL, state TEXT NOT NULL)""",
    ],
    8: [
        "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX jobs_claim_priority ON jobs (queue, status, priority DESC, ready_at, id)",
        "DROP INDEX jobs_claim",
    ],
    9: [
        "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, ready_at, id) WHERE status = 'ready'",
        "DROP INDEX jobs_claim_priority",
        "CREATE INDEX jobs_held ON jobs (queue, lease_expires) WHERE status = 'in_flight'",
        "DROP INDEX jobs_lease",
        "CREATE INDEX jobs_died ON jobs (queue, died_at) WHERE status = 'dead'",
        "DROP INDEX jobs_dead",
        "CREATE INDEX jobs_expires ON jobs (result_expires) WHERE status IN ('done', 'cancelled')",
        "DROP INDEX jobs_expiry",
    ],
}

RECORDED = max(SCHEMAS)

STATUSES = ("ready", "in_flight", "done", "dead")
"""The statuses a version-1 row can hold (later versions add ``cancelled``)."""


def build(path: Path, version: int, jobs_per_status: int = 1, queues: int = 1) -> None:
    """A database as the guild of schema ``version`` left it (WAL, like the broker's),
    holding ``jobs_per_status`` jobs in every status on each of ``queues`` queues,
    with their idempotency keys."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("BEGIN")
        for number in range(1, version + 1):
            for statement in SCHEMAS[number]:
                db.execute(statement)
        db.execute(f"PRAGMA user_version = {version}")
        rows = []
        keys = []
        for q in range(queues):
            for status in STATUSES:
                for n in range(jobs_per_status):
                    job_id = f"{status}-{q}-{n}"
                    rows.append(
                        (job_id, f"q{q}", f'{{"n": {n}}}', status, f"key-{job_id}", 1.0 + n)
                    )
                    keys.append((f"q{q}", f"key-{job_id}", job_id, 9e9))
        db.executemany(
            "INSERT INTO jobs (id, queue, payload, attempt, max_attempts, enqueued_at,"
            " trace_id, status, ready_at, key) VALUES (?, ?, ?, 0, 3, ?, 'trace', ?, 1.0, ?)",
            [(i, q, p, e, s, k) for i, q, p, s, k, e in rows],
        )
        db.executemany("INSERT INTO idempotency VALUES (?, ?, ?, ?)", keys)
        db.execute("COMMIT")
    finally:
        db.close()


def schema_of(path: Path) -> dict[str, object]:
    """Every table's columns and every index's columns and rows: what two files must share
    to hold the same schema (SQL text differs in whitespace, columns do not)."""
    db = sqlite3.connect(path)
    try:
        found: dict[str, object] = {}
        for kind, name, table, sql in db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
        ):
            if kind == "table":
                found[f"table {name}"] = db.execute(f"PRAGMA table_info({name})").fetchall()
            elif kind == "index":
                # A partial index's rows are its WHERE clause (whitespace aside).
                where = " ".join(sql.split()).partition(" WHERE ")[2]
                found[f"index {name} on {table}"] = (
                    db.execute(f"PRAGMA index_xinfo({name})").fetchall(),
                    where,
                )
        found["user_version"] = db.execute("PRAGMA user_version").fetchone()[0]
        return found
    finally:
        db.close()


def version_of(path: Path) -> int:
    """The file's schema version (``PRAGMA user_version``)."""
    db = sqlite3.connect(path)
    try:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        return version
    finally:
        db.close()


def jobs_of(path: Path) -> dict[tuple[str, str], int]:
    """How many jobs the file holds, by queue and status."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT queue, status, count(*) FROM jobs GROUP BY queue, status")
        return {(queue, status): n for queue, status, n in rows}
    finally:
        db.close()


def intact(path: Path) -> bool:
    """Whether SQLite finds the file whole and every foreign key satisfied."""
    db = sqlite3.connect(path)
    try:
        ok = db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        return ok and db.execute("PRAGMA foreign_key_check").fetchall() == []
    finally:
        db.close()
