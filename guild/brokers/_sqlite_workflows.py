"""The workflow store (``guild.workflows.WorkflowStore``) in SQLite: one row per
workflow in the ``workflows`` table (schema version 5, see ``_sqlite_schema``).

Each write is one ``BEGIN IMMEDIATE`` transaction on the broker's connection, so
the compare-and-set of ``update_workflow`` (``UPDATE … WHERE version = ?``) lets
exactly one of several processes sharing the file win. Reads take text as bytes
and decode it here, so one row holding text that is not UTF-8 (which makes
``sqlite3`` refuse the whole fetch) cannot hide the others.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from ._workflow_store import (
    FIELDS,
    WorkflowRecord,
    check_create,
    check_id,
    check_ids,
    check_list,
    check_update,
    readable,
    readable_or_raise,
    record_from_stored,
)

Run = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

_COLUMNS = ", ".join(FIELDS)
# SQLite binds at most 999 variables per statement in older builds.
_CHUNK = 500


def _as_bytes(db: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[Any]:
    db.text_factory = bytes
    try:
        return db.execute(sql, params).fetchall()
    finally:
        db.text_factory = str


def _decoded(row: Sequence[Any]) -> tuple[object, WorkflowRecord | str]:
    return row[0], record_from_stored(dict(zip(FIELDS, row, strict=True)))


class SqliteWorkflows:
    """The workflow store over a broker's ``read``/``write`` runners (each runs one
    function on the connection in a worker thread; ``write`` inside ``BEGIN IMMEDIATE``)."""

    def __init__(self, read: Run, write: Run, now: Callable[[], float]) -> None:
        self._read = read
        self._write = write
        self._now = now

    async def create_workflow(self, record: WorkflowRecord) -> bool:
        check_create(record)
        row = tuple(getattr(record, name) for name in FIELDS)

        def insert(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                f"INSERT INTO workflows ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
                " ON CONFLICT (id) DO NOTHING",
                row,
            )
            return cursor.rowcount == 1

        created: bool = await self._write(insert)
        return created

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        check_id(workflow_id)

        def select(db: sqlite3.Connection) -> list[Any]:
            return _as_bytes(db, f"SELECT {_COLUMNS} FROM workflows WHERE id = ?", (workflow_id,))

        rows: list[Any] = await self._read(select)
        if not rows:
            return None
        return readable_or_raise(workflow_id, _decoded(rows[0])[1])

    async def list_workflows(
        self, *, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[WorkflowRecord]:
        wanted = check_list(statuses, limit)
        where = ""
        params: list[Any] = []
        if wanted is not None:
            # SQLite takes ``IN ()``: no statuses, no rows.
            where = f" WHERE status IN ({','.join('?' * len(wanted))})"
            params = list(wanted)
        sql = f"SELECT {_COLUMNS} FROM workflows{where} ORDER BY created_at, id LIMIT ? OFFSET ?"

        def select(db: sqlite3.Connection) -> list[tuple[object, WorkflowRecord | str]]:
            # Pages until ``limit`` readable records (unreadable ones are skipped),
            # in one read transaction so the pages agree with each other.
            found: list[tuple[object, WorkflowRecord | str]] = []
            good = 0
            db.execute("BEGIN")
            try:
                while good < limit:
                    want = limit - good
                    rows = _as_bytes(db, sql, [*params, want, len(found)])
                    for row in rows:
                        found.append(_decoded(row))
                        good += not isinstance(found[-1][1], str)
                    if len(rows) < want:
                        break
            finally:
                db.execute("COMMIT")
            return found

        return readable(await self._read(select))

    async def update_workflow(
        self, workflow_id: str, *, version: int, status: str, state: str
    ) -> bool:
        check_update(workflow_id, version, status, state)
        now = self._now()

        def update(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE workflows SET status = ?, state = ?, version = version + 1,"
                " updated_at = ? WHERE id = ? AND version = ?",
                (status, state, now, workflow_id, version),
            )
            return cursor.rowcount == 1

        applied: bool = await self._write(update)
        return applied

    async def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        ids = check_ids(workflow_ids)

        def delete(db: sqlite3.Connection) -> int:
            count = 0
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                count += db.execute(
                    f"DELETE FROM workflows WHERE id IN ({','.join('?' * len(chunk))})", chunk
                ).rowcount
            return count

        deleted: int = await self._write(delete)
        return deleted
