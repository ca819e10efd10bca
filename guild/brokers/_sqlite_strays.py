"""Rows no claim would ever take: dead-lettered with the reason, once per queue.

The claim takes ``status = 'ready'`` rows of a known priority whose ``ready_at`` is
due, and the lease sweep takes ``in_flight`` rows whose ``lease_expires`` has
passed. A row outside those shapes (an unknown status, a priority that is no
level, a ``ready_at`` or ``lease_expires`` that is not a number, as a hand edit or
another program may leave) would wait for ever, unseen: lost work that no count
shows. Each broker looks for such rows of a queue once: the claims of that
queue that find nothing to take look through the table a slice of rowids at a
time (:data:`STRAY_SLICE`), so a deep backlog is not held up, and dead-letter them, each with a reason that names the field, so
``guild dlq`` shows them and nothing else in the queue is held up.
"""

from __future__ import annotations

import sqlite3

from .._job import PRIORITIES

STATUSES = ("ready", "in_flight", "done", "dead", "cancelled")
"""The statuses a SQLite row may hold (``delayed`` is ``ready`` with a later ready_at)."""

_KNOWN = "(" + ", ".join(f"'{s}'" for s in STATUSES) + ")"
_LEVELS = "(" + ", ".join(str(int(level)) for level in PRIORITIES) + ")"
_NUMBER = "('integer', 'real')"

STRAY_SLICE = 4096
"""Rowids one idle claim looks through for strays (about 1 ms of the write lock)."""

_BURY = f"""
UPDATE jobs SET status = 'dead', receipt = NULL, traceback = NULL, died_at = ?,
    finished_at = ?, result_expires = ?,
    error = 'rejected: job ' || id || ': ' || CASE
        WHEN status IS NULL OR status NOT IN {_KNOWN}
            THEN 'field ''status'' is ' || quote(status) || ', none of {", ".join(STATUSES)}'
        WHEN status = 'ready' AND (typeof(priority) != 'integer' OR priority NOT IN {_LEVELS})
            THEN 'field ''priority'' is ' || quote(priority) || ', none of {_LEVELS[1:-1]}'
        WHEN status = 'ready'
            THEN 'field ''ready_at'' is ' || quote(ready_at) || ', not a number'
        ELSE 'field ''lease_expires'' is ' || quote(lease_expires) || ', not a number'
    END
WHERE rowid > ? AND rowid <= ? AND queue = ? AND (
    status IS NULL OR status NOT IN {_KNOWN}
    OR (status = 'ready' AND (typeof(priority) != 'integer' OR priority NOT IN {_LEVELS}
        OR typeof(ready_at) NOT IN {_NUMBER}))
    OR (status = 'in_flight' AND typeof(lease_expires) NOT IN {_NUMBER})
)
RETURNING id, error
"""


def bury(
    db: sqlite3.Connection, queue: str, now: float, keep: float, after: int, upto: int
) -> list[tuple[str, str]]:
    """Dead-letter ``queue``'s rows that no claim would take among the rowids in
    ``(after, upto]``; returns ``(id, reason)`` of each. ``keep``: seconds the dead
    record is kept, as for any dead job."""
    rows = db.execute(_BURY, (now, now, now + keep, after, upto, queue)).fetchall()
    return [(str(job_id), str(reason)) for job_id, reason in rows]
