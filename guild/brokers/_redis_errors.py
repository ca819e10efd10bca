"""The one place coredis and socket errors become guild errors.

coredis is not imported here: a broker on a single Redis may never load it (its
calls go through ``_redis_wire``), and an exception of coredis's can only be
raised once coredis is loaded, so its classes are looked up in ``sys.modules``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._errors import BrokerDataError, BrokerError, BrokerUnavailable
from .._groups import leaves
from ._redis_wire import ReplyError

_UNREACHABLE_NATIVE = (TimeoutError, OSError)


def unreachable() -> tuple[type[BaseException], ...]:
    """The exceptions that mean Redis cannot be reached: a socket's, a timeout,
    and coredis's connection error when coredis is loaded."""
    found = _coredis_exceptions()
    if found is None:
        return _UNREACHABLE_NATIVE
    connection_error: type[BaseException] = found.ConnectionError
    return (connection_error, *_UNREACHABLE_NATIVE)


def _coredis_exceptions() -> Any:
    return sys.modules.get("coredis.exceptions")


REFUSING = ("OOM", "MISCONF", "READONLY", "MASTERDOWN", "BUSY ", "CLUSTERDOWN", "TRYAGAIN")
"""Error codes of a server that is up but cannot take writes for now: out of memory
(maxmemory with noeviction), a failed snapshot (stop-writes-on-bgsave-error), a
replica after a failover, a script that runs too long, a cluster healing. Like a
full disk under SQLite, that is an outage to wait out, not a crash of the worker."""

_UNREACHABLE_REPLIES = ("LOADING", "ERR max number of clients reached")
"""Error replies coredis raises as connection errors (its ``BusyLoadingError`` and
its "max clients" ``ConnectionError``): the lean connections
(``_redis_wire``) map them the same way."""

_CREDENTIALS = {
    "NOAUTH": "the server asks for a password and the broker URL gives none",
    "WRONGPASS": "the server refused the user and password of the broker URL",
}
"""Replies to a connection's ``HELLO … AUTH``, by code, said plainly (Redis's own
NOAUTH text speaks of calling HELLO). Unavailable, not a crash: credentials that
stop working under a running worker (a server restarted with another password, a
rotated ACL) come back when the server's or the URL's are fixed, and every loop
of a running app waits out BrokerUnavailable, where a BrokerError from any of
them would take the whole process down."""


_NAMED_CODES = frozenset(
    [
        "ASK",
        "BUSYGROUP",
        "CLUSTERDOWN",
        "CROSSSLOT",
        "ERR",
        "EXECABORT",
        "LOADING",
        "NOSCRIPT",
        "MOVED",
        "NOAUTH",
        "NOGROUP",
        "NOKEY",
        "NOPERM",
        "NOPROTO",
        "NOTBUSY",
        "READONLY",
        "TRYAGAIN",
        "UNBLOCKED",
        "WRONGPASS",
        "WRONGTYPE",
    ]
)
"""The codes coredis's parser turns into exception classes, leaving them out of the
message: a lean connection's error reads the same."""


class WrongTypeError(BrokerDataError):
    """A key holds another type than the command works on (``WRONGTYPE``): a
    record overwritten by something else. Typed so a caller that can go on
    without that one record (``list_dead``) tells it from other failures; a
    :class:`guild.BrokerDataError`, so a worker waits until the key is repaired."""


def wrong_type_text(key: str, found: str, wanted: str) -> str:
    """What a key of another type than guild keeps there is, said as the scripts
    say it (``wrong_type_reply`` in ``_redis_functions.lua``)."""
    return (
        f"the key {key} holds a {found}, not a {wanted}"
        " (another program's key under guild's prefix?)"
    )


class GroupExistsError(BrokerError):
    """``XGROUP CREATE`` found the consumer group made already (``BUSYGROUP``):
    by another process first, which is fine for a caller that only needs it
    to be there."""


_WRONG_TYPE = "WRONGTYPE Operation against a key holding the wrong kind of value"
"""Redis' own text of a ``WRONGTYPE`` reply, found inside the ``ERR Error running
script`` of a Redis before 7."""

_TYPED: dict[str, type[BrokerError]] = {
    "WRONGTYPE": WrongTypeError,
    "BUSYGROUP": GroupExistsError,
}
"""Reply codes whose failure a caller handles, by the error raised for them."""


def _reply_text(message: str) -> str:
    code, _, rest = message.partition(" ")
    return rest if code in _NAMED_CODES else message


@contextmanager
def map_redis_exceptions(what: str) -> Iterator[None]:
    """Translate a failed Redis call: unreachable -> BrokerUnavailable, else BrokerError.

    coredis runs its connections in a task group, so one failure can arrive
    wrapped in exception groups; a group of one is unwrapped first.
    """
    try:
        yield
    except BaseExceptionGroup as group:
        found = leaves(group)
        if len(found) == 1 and isinstance(found[0], Exception):
            with map_redis_exceptions(what):
                raise found[0] from None
        raise
    except Exception as exc:
        _translate(what, exc)
        raise


def _translate(what: str, exc: Exception) -> None:
    """Raise the guild error ``exc`` stands for; return when it is no Redis error."""
    if isinstance(exc, unreachable()):
        raise BrokerUnavailable(f"redis: {what}: {exc}") from exc
    if isinstance(exc, ReplyError):
        # Told apart by the whole reply, its code included.
        message = str(exc)
        if message.startswith(_UNREACHABLE_REPLIES):
            raise BrokerUnavailable(f"redis: {what}: {_reply_text(message)}") from exc
        if message.startswith(REFUSING):
            raise BrokerUnavailable(f"redis refuses {what}: {_reply_text(message)}") from exc
        code = message.partition(" ")[0]
        if code in _CREDENTIALS:
            raise BrokerUnavailable(f"redis: {what}: {_CREDENTIALS[code]} ({message})") from exc
        error = _TYPED.get(message.partition(" ")[0], BrokerError)
        if error is BrokerError and _WRONG_TYPE in message:
            # Redis before 7 wraps a script's failed command in its own ERR.
            error = WrongTypeError
        raise error(f"redis: {what}: {_reply_text(message)}") from exc
    found = _coredis_exceptions()
    if found is not None and isinstance(exc, found.RedisError):
        if str(exc).startswith(REFUSING):
            raise BrokerUnavailable(f"redis refuses {what}: {exc}") from exc
        if isinstance(exc, found.AuthenticationError):
            code = "NOAUTH" if isinstance(exc, found.AuthenticationRequiredError) else "WRONGPASS"
            raise BrokerUnavailable(f"redis: {what}: {_CREDENTIALS[code]} ({code} {exc})") from exc
        if isinstance(exc, found.WrongTypeError) or _WRONG_TYPE in str(exc):
            raise WrongTypeError(f"redis: {what}: {exc}") from exc
        if isinstance(exc, found.StreamDuplicateConsumerGroupError):
            raise GroupExistsError(f"redis: {what}: {exc}") from exc
        raise BrokerError(f"redis: {what}: {exc}") from exc
