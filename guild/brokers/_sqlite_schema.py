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
    (
        3,
        [
            # The Ledger (guild.brokers.Ledger): counts that workers add to, and
            # set-if-absent marks that lapse at ``expires`` (broker clock).
            """
            CREATE TABLE ledger_counts (
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                name TEXT NOT NULL,
                value REAL NOT NULL,
                PRIMARY KEY (namespace, key, name)
            )
            """,
            """
            CREATE TABLE ledger_marks (
                namespace TEXT NOT NULL,
                key TEXT NOT NULL,
                value TEXT NOT NULL,
                expires REAL NOT NULL,
                PRIMARY KEY (namespace, key)
            )
            """,
            "CREATE INDEX ledger_marks_expiry ON ledger_marks (expires)",
        ],
    ),
    (
        4,
        [
            # Job cancellation (Broker.cancel): a job whose run has started gets a
            # request, which its worker polls for; the partial index holds only
            # those, so the poll reads a handful of rows, not the table. A job
            # ended so has the status 'cancelled', counted per queue like 'done'.
            "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX jobs_cancel ON jobs (status) WHERE cancel_requested = 1",
            "ALTER TABLE queue_counts ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0",
        ],
    ),
    (
        5,
        [
            # The workflow store (guild.workflows.WorkflowStore): one row per
            # workflow, spec and state as JSON text; ``version`` is what
            # update_workflow compares and sets. Lists are oldest first, of all
            # statuses or of some: one index each.
            """
            CREATE TABLE workflows (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                status TEXT NOT NULL,
                spec TEXT NOT NULL,
                state TEXT NOT NULL,
                version INTEGER NOT NULL,
                created_at REAL NOT NULL,
                updated_at REAL NOT NULL
            )
            """,
            "CREATE INDEX workflows_age ON workflows (created_at, id)",
            "CREATE INDEX workflows_status ON workflows (status, created_at, id)",
        ],
    ),
    (
        6,
        [
            # Job inspection (Broker.job_info, Broker.set_progress): when the last
            # run started, and the last progress its handler reported (fraction
            # 0..1, message, broker time it was said).
            "ALTER TABLE jobs ADD COLUMN started_at REAL",
            "ALTER TABLE jobs ADD COLUMN progress REAL",
            "ALTER TABLE jobs ADD COLUMN progress_message TEXT",
            "ALTER TABLE jobs ADD COLUMN progress_at REAL",
        ],
    ),
    (
        7,
        [
            # Canary rollouts (guild.rollout): one row per queue under a rollout.
            # ``share`` is what enqueue routes by (read in its own transaction);
            # ``state`` the rollout's record as JSON; ``version`` what a write
            # compares and sets, so a controller and an operator never clobber.
            """
            CREATE TABLE rollouts (
                queue TEXT PRIMARY KEY,
                share REAL NOT NULL,
                version INTEGER NOT NULL,
                state TEXT NOT NULL
            )
            """,
        ],
    ),
    (
        8,
        [
            # Job priorities (guild.Priority; 0 is normal, what every older row
            # gets). The claim index orders by priority first, highest first:
            # a claim asks for ``priority IN (1, 0, -1)``, which SQLite walks
            # level by level through the index with a ``ready_at`` range in
            # each, no sort. It replaces the old claim index, which it covers.
            "ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0",
            "CREATE INDEX jobs_claim_priority ON jobs (queue, status, priority DESC, ready_at, id)",
            "DROP INDEX jobs_claim",
        ],
    ),
    (
        9,
        [
            # Lean writes: each secondary index holds only the rows of the status
            # it serves (partial indexes), so a row is in one of them at a time
            # and finished rows, which stay until their retention ends, are in
            # none of those the claim path walks. An enqueue writes the row, its
            # id and one claim entry: 3.5 WAL pages per one-job commit, not 5.
            # A query reaches a partial index only by naming its WHERE term
            # (``status = 'ready'``, ``status IN ('done', 'cancelled')``) itself.
            "CREATE INDEX jobs_ready ON jobs (queue, priority DESC, ready_at, id)"
            " WHERE status = 'ready'",
            "DROP INDEX jobs_claim_priority",
            "CREATE INDEX jobs_held ON jobs (queue, lease_expires) WHERE status = 'in_flight'",
            "DROP INDEX jobs_lease",
            "CREATE INDEX jobs_died ON jobs (queue, died_at) WHERE status = 'dead'",
            "DROP INDEX jobs_dead",
            "CREATE INDEX jobs_expires ON jobs (result_expires)"
            " WHERE status IN ('done', 'cancelled')",
            "DROP INDEX jobs_expiry",
        ],
    ),
]
