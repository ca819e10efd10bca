"""The one place sqlite3 errors become guild errors."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager

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
        raise BrokerUnavailable(f"sqlite {path}: {exc}") from exc
