"""The version of guild's key layout in Redis: what ``guild migrate`` reads.

Version 1 is the layout every guild before versioning wrote (``_redis_keys``,
the Lua scripts): a Redis without the ``<prefix>:layout`` key holds version 1,
and the first broker to connect writes ``1`` there. A broker refuses any other
version (:class:`SchemaMismatch`) rather than read keys it does not understand.

A later layout change bumps :data:`LAYOUT_VERSION` and ships its step with
``guild migrate``: ``BGSAVE``, waiting until ``LASTSAVE`` moves past its value
before and ``rdb_last_bgsave_status`` is ``ok`` (the backup, an RDB file in
Redis' ``dir``), then the step, then the checks; docs/migrations.md. Today there
is no step: ``guild migrate`` on Redis reports the version and nothing pending.
"""

from __future__ import annotations

from .._errors import BrokerError, SchemaMismatch

LAYOUT_VERSION = 1
"""The key layout this guild reads and writes."""


def layout_version(stored: str | None, prefix: str, shown_url: str) -> int:
    """The layout version a ``<prefix>:layout`` value says (``None``: never written,
    so version 1); one this guild understands.

    Raises:
        SchemaMismatch: another version.
        BrokerError: a value that is no version number.
    """
    if stored is None:
        return 1
    where = f"Redis {shown_url} (prefix {prefix!r})"
    try:
        found = int(stored)
    except ValueError:
        raise BrokerError(
            f"{where}: the key {prefix}:layout holds {stored!r}, not a layout version"
        ) from None
    if found < 1:
        raise BrokerError(f"{where}: the key {prefix}:layout holds {found}, not a layout version")
    if found != LAYOUT_VERSION:
        raise SchemaMismatch(where, found, LAYOUT_VERSION, f"guild migrate --broker {shown_url}")
    return found
