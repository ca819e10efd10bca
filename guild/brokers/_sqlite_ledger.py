"""The Ledger (``guild.brokers.Ledger``) in SQLite: tables ``ledger_counts`` and
``ledger_marks`` (schema version 3, see ``_sqlite_schema``).

Each call is one transaction on the broker's connection, so counts added by
several processes sharing the file never lose an update, and a mark is set by
exactly one of the callers racing for it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import Any

from ._ledger import check_ledger_args, checked_counts, checked_ttl, checked_value

Run = Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]

# SQLite binds at most 999 variables per statement in older builds.
_CHUNK = 500


class SqliteLedger:
    """The Ledger over a broker's ``read``/``write`` runners (each runs one function
    on the connection in a worker thread; ``write`` inside ``BEGIN IMMEDIATE``)."""

    def __init__(self, read: Run, write: Run, now: Callable[[], float]) -> None:
        self._read = read
        self._write = write
        self._now = now

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        check_ledger_args(namespace, key)
        rows = [(namespace, key, name, value) for name, value in checked_counts(counts).items()]

        def add(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO ledger_counts (namespace, key, name, value) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, key, name) DO UPDATE SET value = value + excluded.value",
                rows,
            )

        if rows:
            await self._write(add)

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        check_ledger_args(namespace)

        def select(db: sqlite3.Connection) -> dict[str, dict[str, float]]:
            found: dict[str, dict[str, float]] = {}
            for key, name, value in db.execute(
                "SELECT key, name, value FROM ledger_counts WHERE namespace = ?", (namespace,)
            ):
                found.setdefault(key, {})[name] = float(value)
            return found

        found: dict[str, dict[str, float]] = await self._read(select)
        return found

    async def count_namespaces(self) -> list[str]:
        def select(db: sqlite3.Connection) -> list[str]:
            return [
                row[0]
                for row in db.execute(
                    "SELECT DISTINCT namespace FROM ledger_counts ORDER BY namespace"
                )
            ]

        names: list[str] = await self._read(select)
        return names

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        check_ledger_args(namespace, key)
        seconds = checked_ttl(ttl)
        checked_value(value)
        now = self._now()

        def set_if_absent(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "INSERT INTO ledger_marks (namespace, key, value, expires) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (namespace, key) DO UPDATE"
                " SET value = excluded.value, expires = excluded.expires"
                " WHERE ledger_marks.expires <= ?",
                (namespace, key, value, now + seconds, now),
            )
            set_now = cursor.rowcount == 1
            if set_now:
                # Lapsed marks go a few at a time, so the table follows live marks.
                db.execute(
                    "DELETE FROM ledger_marks WHERE rowid IN"
                    " (SELECT rowid FROM ledger_marks WHERE expires <= ? LIMIT 16)",
                    (now,),
                )
            return set_now

        return bool(await self._write(set_if_absent))

    async def marked(self, namespace: str, keys: Collection[str]) -> dict[str, str]:
        check_ledger_args(namespace)
        wanted = list(dict.fromkeys(keys))
        now = self._now()

        def select(db: sqlite3.Connection) -> dict[str, str]:
            found: dict[str, str] = {}
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                found.update(
                    (row[0], row[1])
                    for row in db.execute(
                        f"SELECT key, value FROM ledger_marks WHERE namespace = ? AND key IN ({marks})"
                        " AND expires > ?",
                        (namespace, *chunk, now),
                    )
                )
            return found

        if not wanted:
            return {}
        found: dict[str, str] = await self._read(select)
        return found
