"""The one place sqlite3 errors become guild errors."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .._errors import BrokerClosed, BrokerUnavailable


@contextmanager
def map_sqlite_exceptions(path: str) -> Iterator[None]:
    """``sqlite3`` errors -> :class:`BrokerClosed` (closed connection) or
    :class:`BrokerUnavailable` (locked, unreadable, disk full, corrupt), ``from exc``."""
    try:
        yield
    except sqlite3.ProgrammingError as exc:
        if "closed" in str(exc).lower():
            raise BrokerClosed(f"the sqlite broker for {path} is closed") from exc
        raise BrokerUnavailable(f"sqlite {path}: {exc}") from exc
    except sqlite3.Error as exc:
        raise BrokerUnavailable(f"sqlite {path}: {exc}{_why_not_writable(path, exc)}") from exc


def _why_not_writable(path: str, exc: sqlite3.Error) -> str:
    """What the filesystem says about a file SQLite could not open or write:
    SQLite's own message ("unable to open database file") does not say why."""
    text = str(exc)
    if "unable to open" not in text and "readonly" not in text:
        return ""
    target = Path(path)
    directory = target.parent
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f" (the filesystem of {directory} is mounted read-only)"
    except OSError:
        return ""
    if target.exists() and not os.access(target, os.W_OK):
        return " (the file is read-only)"
    if not os.access(directory, os.W_OK):
        # WAL mode writes its -wal and -shm files beside the database.
        return f" (the directory {directory} is not writable)"
    return ""
