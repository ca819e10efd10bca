"""Schema versions of a SQLite database: the check every open makes, and
``guild migrate``'s backup, apply, verify.

Opening (:func:`prepare`) creates a brand-new (version 0) database at the
current version, accepts the current version, and refuses any other with
:class:`SchemaMismatch`: an older file waits for ``guild migrate``, so no worker
changes the schema under the others sharing the file, and nothing migrates
without a backup.

:func:`migrate` holds the write lock (``BEGIN IMMEDIATE``) from start to end.
Under it: a backup through SQLite's online backup API (from a second connection:
in WAL it reads the last commit, which no one else can change while the lock is
held) into ``<file>.v<old>-<UTC time>.bak`` next to the database; a census (jobs
per queue and status, rows per table); every pending step; the checks
(``integrity_check``, ``foreign_key_check``, the census again, equal). The steps
and the checks share one transaction, so a failed check rolls everything back
and a killed process leaves the old file as it was (SQLite's atomic commit).
After the commit the committed file is checked again; if that fails, the backup
is copied back over it with the backup API, which holds the file's lock while it
copies.

``GUILD_TEST_MIGRATE_FAULT`` exists for the tests alone (a real migration has no
other way to fail on demand): ``verify`` fails the check before the commit,
``after-commit`` the one after it, and ``pause:N`` stops, with the lock held and
the transaction open, after step N (printing ``migrate paused after step N`` to
stderr) so a test can kill the process there.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import attrs

from .._errors import BrokerUnavailable, MigrationFailed, SchemaMismatch
from ._sqlite_errors import map_sqlite_exceptions
from ._sqlite_schema import MIGRATIONS

CURRENT = MIGRATIONS[-1][0]
"""The schema version this guild reads and writes."""

FAULT_ENV = "GUILD_TEST_MIGRATE_FAULT"

Census = dict[str, dict[str, int]]
"""``{"jobs <queue>": {status: n}, "rows": {table: n}}``: what a migration must keep."""


@attrs.frozen(kw_only=True)
class Step:
    """One pending migration: the version it makes, and what its statements do."""

    version: int
    does: tuple[str, ...]


@attrs.frozen(kw_only=True)
class MigrationReport:
    """What ``guild migrate`` found and did.

    Attributes:
        broker: the database (or Redis) as shown to the operator.
        kind: ``sqlite schema`` or ``redis key layout``.
        found: the version stored before.
        target: the version this guild needs.
        pending: the steps from ``found`` to ``target``, oldest first.
        applied: the steps were applied and verified.
        backup: the backup file taken (None: nothing was backed up).
        census: jobs per queue and status, rows per table, before (and, once
            applied, after: they are equal).
        checks: the checks that passed after applying.
    """

    broker: str
    kind: str
    found: int
    target: int
    pending: tuple[Step, ...]
    applied: bool = False
    backup: str | None = None
    census: Census = attrs.field(factory=dict)
    checks: tuple[str, ...] = ()


def migrate_command(path: str | Path) -> str:
    return f"guild migrate --broker sqlite://{Path(path).absolute()}"


def describe(statement: str) -> str:
    """A statement in a few words: ``CREATE TABLE workflows``, ``ALTER TABLE jobs ADD COLUMN started``."""
    words = statement.replace("(", " (").split()
    head = []
    for word in words:
        if word.startswith("(") or word.upper() in (
            "WHERE",
            "SET",
            "ON",
            "INTEGER",
            "TEXT",
            "REAL",
        ):
            break
        head.append(word)
    return " ".join(head)


def pending_steps(found: int) -> tuple[Step, ...]:
    return tuple(
        Step(version=version, does=tuple(describe(s) for s in statements))
        for version, statements in MIGRATIONS
        if version > found
    )


def schema_version(db: sqlite3.Connection) -> int:
    version: int = db.execute("PRAGMA user_version").fetchone()[0]
    return version


def refuse_foreign(db: sqlite3.Connection, path: str) -> None:
    """Refuse a database that another program made: no schema version of guild's,
    but tables. Checked before guild writes anything to it (its tables, or its
    journal mode), so the file is left as it was.

    Raises:
        BrokerUnavailable: naming the file and the tables found.
    """
    # One statement, one snapshot: another opener may be making the schema (its
    # tables and its version, in one transaction) between two reads.
    tables = [
        name
        for (name,) in db.execute(
            "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"
            " AND (SELECT user_version FROM pragma_user_version) = 0 ORDER BY name LIMIT 6"
        )
    ]
    if tables:
        named = ", ".join(tables[:5]) + (", ..." if len(tables) > 5 else "")
        raise BrokerUnavailable(
            f"sqlite {Path(path).absolute()}: not a guild database (it holds {named}, which"
            " guild did not make, and no guild schema version): name another file"
        )


def prepare(db: sqlite3.Connection, path: str, *, migrate: bool = False) -> None:
    """Make a brand-new database current; refuse any other version than the current.

    Args:
        migrate: apply pending steps in place instead of refusing an older file
            (one transaction, no backup: for tests and embedders that own the file).

    Raises:
        SchemaMismatch: the file is older (and ``migrate`` is false) or newer.
    """
    if schema_version(db) == CURRENT:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the lock: another process may have created or migrated it.
        found = schema_version(db)
        refuse_foreign(db, path)
        if found > CURRENT or (0 < found < CURRENT and not migrate):
            raise SchemaMismatch(
                f"the database {Path(path).absolute()}", found, CURRENT, migrate_command(path)
            )
        _apply(db, found)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _apply(db: sqlite3.Connection, found: int, pause_after: int | None = None) -> None:
    for version, statements in MIGRATIONS:
        if version > found:
            for statement in statements:
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {version}")
            if version == pause_after:
                print(f"migrate paused after step {version}", file=sys.stderr, flush=True)
                time.sleep(3600)


def census(db: sqlite3.Connection, tables: Sequence[str] | None = None) -> Census:
    """Jobs per queue and status, and rows per table (the tables named, else all)."""
    if tables is None:
        tables = [
            name
            for (name,) in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
    found: Census = {"rows": {}}
    for table in sorted(tables):
        quoted = '"' + table.replace('"', '""') + '"'
        found["rows"][table] = db.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0]
    if "jobs" in tables:
        for queue, status, count in db.execute(
            "SELECT queue, status, count(*) FROM jobs GROUP BY queue, status"
        ):
            found.setdefault(f"jobs {queue}", {})[str(status)] = count
    return found


def problems(db: sqlite3.Connection, before: Census, target: int, injected: bool) -> list[str]:
    """What is wrong with the migrated database (nothing: an empty list)."""
    found = []
    integrity = [row[0] for row in db.execute("PRAGMA integrity_check")]
    if integrity != ["ok"]:
        found.append("integrity_check: " + "; ".join(map(str, integrity[:5])))
    keys = db.execute("PRAGMA foreign_key_check").fetchall()
    if keys:
        found.append(f"foreign_key_check: {len(keys)} rows point at nothing")
    if (version := schema_version(db)) != target:
        found.append(f"schema version is {version}, not {target}")
    after = census(db, list(before["rows"]))
    if after != before:
        changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
        found.append("counts changed: " + ", ".join(changed))
    if injected:
        found.append(f"a failure injected by {FAULT_ENV}")
    return found


CHECKS = ("integrity_check", "foreign_key_check", "schema version", "counts equal")


def _fault() -> tuple[str, int | None]:
    fault = os.environ.get(FAULT_ENV, "")
    if fault.startswith("pause:"):
        return "pause", int(fault.removeprefix("pause:"))
    return fault, None


@contextmanager
def _connect(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        db.execute("PRAGMA busy_timeout=30000")
        yield db
    finally:
        db.close()


def backup_path(path: Path, version: int, now: dt.datetime) -> Path:
    """``<file>.v<version>-<UTC time>.bak`` next to ``path``, one not taken yet."""
    stamp = now.astimezone(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    candidate = path.with_name(f"{path.name}.v{version}-{stamp}.bak")
    number = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.name}.v{version}-{stamp}-{number}.bak")
        number += 1
    return candidate


def _backup(source: Path, target: Path) -> None:
    # 0600 like the database: a backup holds the same jobs, results and keys.
    os.close(os.open(target, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600))
    with _connect(source) as src, _connect(target) as dst:
        src.backup(dst)


def restore(backup: Path, path: Path) -> None:
    """Copy ``backup`` over the database at ``path`` (in one step, under its lock)."""
    with _connect(backup) as src, _connect(path) as dst:
        src.backup(dst)


def migrate(path: Path, *, dry_run: bool = False) -> MigrationReport:
    """List (``dry_run``) or apply the pending schema steps of the database at ``path``.

    Raises:
        BrokerUnavailable: there is no database at ``path``, or it cannot be read.
        SchemaMismatch: the file is newer than this guild.
        MigrationFailed: a check failed; the file was left as it was, or restored
            from the backup (the message says which, and names the backup).
    """
    path = path.absolute()
    shown = str(path)
    if not path.is_file():
        raise BrokerUnavailable(f"no database at {shown}")
    with map_sqlite_exceptions(shown), _connect(path) as db:
        if dry_run:
            report = _report(db, shown)
            return attrs.evolve(report, census=census(db))
        # The version is read under the write lock: what another `guild migrate`
        # finished first is seen, and nothing changes between the read and the steps.
        db.execute("BEGIN IMMEDIATE")
        try:
            report = _report(db, shown)
            if not report.pending:
                found = census(db)
                db.execute("ROLLBACK")
                return attrs.evolve(report, census=found)
            return _migrate_locked(db, path, report)
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


def _report(db: sqlite3.Connection, shown: str) -> MigrationReport:
    refuse_foreign(db, shown)
    found = schema_version(db)
    if found > CURRENT:
        raise SchemaMismatch(f"the database {shown}", found, CURRENT, None)
    return MigrationReport(
        broker=f"sqlite://{shown}",
        kind="sqlite schema",
        found=found,
        target=CURRENT,
        pending=pending_steps(found),
    )


def _migrate_locked(db: sqlite3.Connection, path: Path, report: MigrationReport) -> MigrationReport:
    """Back up, apply, check, commit; ``db`` holds the write lock in an open transaction."""
    fault, pause_after = _fault()
    backup = backup_path(path, report.found, dt.datetime.now(dt.UTC))
    _backup(path, backup)
    before = census(db)
    _apply(db, report.found, pause_after)
    wrong = problems(db, before, CURRENT, injected=fault == "verify")
    if wrong:
        raise MigrationFailed(
            f"sqlite {path}: the migrated schema failed its checks"
            f" ({'; '.join(wrong)}); rolled back, the file is as it was"
            f" (backup kept at {backup})"
        )
    db.execute("COMMIT")
    with _connect(path) as fresh:
        wrong = problems(fresh, before, CURRENT, injected=fault == "after-commit")
    if wrong:
        restore(backup, path)
        raise MigrationFailed(
            f"sqlite {path}: the migrated file failed its checks"
            f" ({'; '.join(wrong)}); restored it from the backup {backup}"
        )
    return attrs.evolve(report, applied=True, backup=str(backup), census=before, checks=CHECKS)
