"""``open_broker(url)``: one place that turns a URL into a broker."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .._errors import UnknownBrokerURL
from ._protocol import Broker

DEFAULT_URL = "sqlite:guild.db"
"""Where jobs go when neither ``--broker`` nor ``GUILD_BROKER`` says otherwise."""


def broker_url_from_env(url: str | None) -> str:
    """The URL to use: the one given, else ``$GUILD_BROKER``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get("GUILD_BROKER") or DEFAULT_URL


def sqlite_path(url: str) -> Path:
    """The database path of a ``sqlite:`` URL.

    ``sqlite:///abs/path.db`` is absolute, ``sqlite:rel/path.db`` is relative to
    the working directory.

    Raises:
        UnknownBrokerURL: no path, or its directory does not exist.
    """
    rest = url[len("sqlite:") :].split("?", 1)[0]
    if rest.startswith("//"):
        parts = urlsplit(url.split("?", 1)[0])
        if parts.netloc not in ("", "localhost"):
            raise UnknownBrokerURL(url, "a sqlite URL names a file, not a host")
        rest = parts.path
    if not rest or rest == "/":
        raise UnknownBrokerURL(
            url, "no database file named (sqlite:///abs/path.db or sqlite:rel.db)"
        )
    path = Path(rest)
    if not path.parent.exists():
        raise UnknownBrokerURL(url, f"the directory {str(path.parent)!r} does not exist")
    return path


def sqlite_synchronous(url: str) -> str:
    """The ``synchronous`` option of a sqlite URL: ``?synchronous=FULL`` fsyncs every
    commit; ``NORMAL`` (the default) fsyncs at WAL checkpoints.

    Raises:
        UnknownBrokerURL: an unknown option or value.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    synchronous = "NORMAL"
    for name, values in query.items():
        if name != "synchronous" or values[-1].upper() not in ("NORMAL", "FULL"):
            raise UnknownBrokerURL(
                url, f"unknown option {name}={values[-1]} (synchronous=NORMAL|FULL)"
            )
        synchronous = values[-1].upper()
    return synchronous


@asynccontextmanager
async def open_broker(url: str | None = None) -> AsyncIterator[Broker]:
    """Open the broker a URL names, and close it on exit.

    Args:
        url: ``memory://``, ``sqlite:///abs.db``, ``sqlite:rel.db``, ``redis://host:port/db``,
            ``rediss://…``, a Redis Cluster as ``redis+cluster://host:port`` (any node;
            ``rediss+cluster://…`` for TLS); ``None`` reads ``$GUILD_BROKER`` (default
            ``sqlite:guild.db``).

    Raises:
        UnknownBrokerURL: the scheme is unknown or the URL is malformed.
    """
    url = broker_url_from_env(url)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    broker: Broker
    if scheme == "memory":
        from .memory import MemoryBroker

        broker = MemoryBroker()
    elif scheme == "sqlite":
        from .sqlite import SqliteBroker

        broker = await SqliteBroker.open(sqlite_path(url), synchronous=sqlite_synchronous(url))
    elif scheme in ("redis", "rediss", "redis+cluster", "rediss+cluster"):
        from .redis import RedisBroker

        broker = await RedisBroker.open(url)
    else:
        raise UnknownBrokerURL(
            url,
            "unknown scheme (expected memory://, sqlite:, redis://, rediss:// or redis+cluster://)",
        )
    try:
        yield broker
    finally:
        await broker.aclose()
