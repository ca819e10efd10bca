"""``open_broker(url)``: one place that turns a URL into a broker."""

from __future__ import annotations

import math
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlencode, urlsplit

from .._errors import BrokerUnavailable, UnknownBrokerURL
from .._retention import URL_OPTIONS, Retention, retention_from_query
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
    if rest.endswith("/"):
        # Path() drops the slash: "sqlite:data/" would make a file named "data".
        raise UnknownBrokerURL(url, f"{rest!r} names a directory, not a database file")
    # sqlite:////abs.db (the "sqlite:///" + an absolute path many write) is /abs.db.
    path = Path("/" + rest.lstrip("/")) if rest.startswith("/") else Path(rest)
    try:
        parent_found, is_directory = path.parent.is_dir(), path.is_dir()
    except OSError as exc:  # a name too long, a directory it may not look in
        raise UnknownBrokerURL(url, f"cannot look up the database file ({exc.strerror})") from None
    if not parent_found:
        raise UnknownBrokerURL(url, f"the directory {str(path.parent)!r} does not exist")
    if is_directory:
        raise UnknownBrokerURL(url, f"{str(path)!r} is a directory, not a database file")
    return path


def display_url(url: str) -> str:
    """The URL fit to print: a SQLite file as its absolute path, any password as ``***``.

    For banners and logs, which are read by more people than hold the password.
    A URL too malformed to take apart (``redis://[::1``, ``sqlite:``) is shown as
    given, its password starred all the same.
    """
    try:
        return _displayed(url)
    except ValueError:
        return _starred(url)


def _displayed(url: str) -> str:
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        path = sqlite_path(url).absolute()
        query = url.split("?", 1)[1] if "?" in url else ""
        return f"sqlite://{path}" + (f"?{query}" if query else "")
    parts = urlsplit(url)
    if parts.password is None and "password=" not in parts.query.lower():
        return url
    if parts.password is not None:
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{parts.netloc.rpartition('@')[2]}")
    fields = parse_qsl(parts.query, keep_blank_values=True)
    if any(name.lower() == "password" for name, _ in fields):
        hidden = [(n, "***" if n.lower() == "password" else v) for n, v in fields]
        parts = parts._replace(query=urlencode(hidden, safe="*"))
    return parts.geturl()


def sqlite_synchronous(url: str) -> str:
    """The ``synchronous`` option of a sqlite URL: ``ENQUEUE`` (the default) fsyncs
    the commits that hold an enqueue, ``FULL`` every commit, ``NORMAL`` none (SQLite
    fsyncs at WAL checkpoints).

    Raises:
        UnknownBrokerURL: an unknown option or value.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    synchronous = "ENQUEUE"
    for name, values in query.items():
        if len(values) > 1:
            raise UnknownBrokerURL(url, f"option {name} given {len(values)} times")
        if name in URL_OPTIONS:
            continue
        if name != "synchronous" or values[-1].upper() not in ("ENQUEUE", "FULL", "NORMAL"):
            raise UnknownBrokerURL(
                url, f"unknown option {name}={values[-1]} (synchronous=ENQUEUE|FULL|NORMAL)"
            )
        synchronous = values[-1].upper()
    return synchronous


def url_retention(url: str, base: Retention | None = None) -> Retention:
    """The :class:`~guild.Retention` a broker URL asks for: ``base`` (default: the
    defaults) with the fields its query sets (``result_ttl``, ``done_ttl``,
    ``dead_ttl``, ``keep_payload``).

    Raises:
        UnknownBrokerURL: one of those options has a bad value.
    """
    query = parse_qs(urlsplit(url).query, keep_blank_values=True)
    return retention_from_query(display_url(url), query, base)


def without_retention(url: str) -> str:
    """The URL without its retention options: what the Redis client is given."""
    if "?" not in url:
        return url
    head, _, query = url.partition("?")
    kept = [(n, v) for n, v in parse_qsl(query, keep_blank_values=True) if n not in URL_OPTIONS]
    return head + ("?" + urlencode(kept) if kept else "")


_UNIX_SCHEMES = ("unix", "redis+unix")
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster", *_UNIX_SCHEMES)
SCHEMES = (
    "memory://",
    "sqlite:",
    "redis://",
    "rediss://",
    "redis+cluster://",
    "rediss+cluster://",
    "unix://",
    "redis+unix://",
)
"""The URL forms :func:`open_broker` accepts, as named in its errors."""


def unix_spelling(url: str) -> str:
    """A ``redis+unix://`` socket URL spelled ``unix://``, the one spelling the Redis
    clients read as a socket path; any other URL as it is."""
    scheme, sep, rest = url.partition("://")
    return f"unix://{rest}" if sep and scheme.lower() in _UNIX_SCHEMES else url


def redis_client_url(url: str) -> str:
    """The URL :meth:`RedisBroker.open <guild.brokers.redis.RedisBroker.open>` is given
    for a Redis URL: without the retention options, a socket spelled ``unix://``."""
    return unix_spelling(without_retention(url))


def check_broker_url(url: str) -> str:
    """The URL's scheme (lower case) if a broker accepts the URL; touches nothing.

    For a command to refuse a bad URL before it imports an app or opens anything.

    Raises:
        UnknownBrokerURL: an unknown scheme, a sqlite URL without a usable file
            path or with an unknown option, a redis URL without a host or port.
    """
    if url != url.strip() or not url.isprintable():
        # A newline or a trailing space would otherwise name another file (or host)
        # than the one meant, and break the error line that shows it.
        raise UnknownBrokerURL(
            _starred(url), "must not start or end with whitespace or hold control characters"
        )
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        sqlite_path(url)
        sqlite_synchronous(url)
        url_retention(url)
        return scheme
    shown = display_url(url)  # the error is printed: no password in it
    if scheme in _REDIS_SCHEMES or scheme == "memory":
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018  (parsing it is the check: a non-number raises)
        except ValueError as exc:  # "Invalid IPv6 URL", a port out of range
            raise UnknownBrokerURL(shown, f"malformed ({exc})") from None
        url_retention(url)
    if scheme in _REDIS_SCHEMES:
        if scheme in _UNIX_SCHEMES:
            _check_unix_url(parts.hostname, parts.path, shown)
            _check_redis_url("", parts.query, scheme, shown)
            return scheme
        if not parts.hostname:
            raise UnknownBrokerURL(shown, "no host (redis://HOST:PORT/DB)")
        try:
            parts.hostname.encode("idna")  # what the client does to connect
        except UnicodeError as exc:
            raise UnknownBrokerURL(shown, f"malformed host {parts.hostname!r} ({exc})") from None
        _check_redis_url(parts.path, parts.query, scheme, shown)
    elif scheme != "memory":
        raise UnknownBrokerURL(
            shown,
            f"unknown scheme {scheme + ':' if scheme else '(none)'}; expected one of "
            + ", ".join(SCHEMES),
        )
    return scheme


def _starred(url: str) -> str:
    """The URL as given, but for what follows ``user:`` up to ``@`` and any
    ``password=`` value, starred (urlsplit would drop a tab or newline the
    error is about)."""
    starred = re.sub(r"(//[^/@]*?:)[^/]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", starred)


def _whole(low: int) -> Callable[[str], bool]:
    return lambda text: text.isascii() and text.isdigit() and int(text) >= low


def _seconds(text: str) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0


def _flag(text: str) -> bool:
    return text.lower() in ("0", "1", "true", "false", "yes", "no")


# The options the Redis client reads from a URL, each with the check of its value.
# The client silently ignores a name it does not know (a typo that changes nothing)
# and passes some values on unchecked (a TypeError far from the URL), so a URL is
# held to this list; options that would break the broker (noreply,
# decode_responses) are left out on purpose.
_REDIS_OPTIONS: dict[str, Callable[[str], bool]] = {
    "db": _whole(0),
    "username": bool,
    "password": bool,
    "client_name": lambda text: bool(text) and not any(c.isspace() for c in text),
    "max_connections": _whole(1),
    "timeout": _whole(1),
    "max_idle_time": _whole(1),
    "stream_timeout": _seconds,
    "connect_timeout": _seconds,
    "protocol_version": lambda text: text in ("2", "3"),
}
_REDIS_TLS_OPTIONS: dict[str, Callable[[str], bool]] = {
    "ssl_keyfile": bool,
    "ssl_certfile": bool,
    "ssl_ca_certs": bool,
    "ssl_check_hostname": _flag,
    "ssl_cert_reqs": lambda text: text.lower() in ("none", "optional", "required"),
}


def _check_unix_url(host: str | None, path: str, shown: str) -> None:
    """A Redis unix socket URL names an absolute socket path and no host; its
    database is the ``db`` option (``unix:///run/redis.sock?db=2``)."""
    if host:
        raise UnknownBrokerURL(
            shown, f"a unix socket URL names a path, not a host ({host!r}): unix:///PATH"
        )
    if not path.startswith("/") or path.endswith("/"):
        raise UnknownBrokerURL(shown, "no absolute socket path (unix:///path/to/redis.sock?db=N)")


def _check_redis_url(path: str, query: str, scheme: str, shown: str) -> None:
    """Refuse a Redis URL's database number or query option that the client would
    ignore or misread, naming it."""
    database = path[1:] if path.startswith("/") else path
    if database and not _whole(0)(database):
        raise UnknownBrokerURL(
            shown, f"database {database!r} is not a whole number (redis://HOST:PORT/DB)"
        )
    if database not in ("", "0") and scheme.endswith("cluster"):
        raise UnknownBrokerURL(shown, f"database {database}: a Redis Cluster has only database 0")
    known = dict(_REDIS_OPTIONS)
    if scheme.startswith("rediss"):
        known.update(_REDIS_TLS_OPTIONS)
    options = parse_qsl(query, keep_blank_values=True)
    names = [name for name, _ in options]
    for name in dict.fromkeys(names):
        # Which of two values a client takes is its own choice: say which one to keep.
        if names.count(name) > 1:
            raise UnknownBrokerURL(shown, f"option {name} given {names.count(name)} times")
    for name, value in options:
        if name in URL_OPTIONS:
            continue  # checked by url_retention
        shown_value = "***" if name == "password" else value
        if name not in known:
            raise UnknownBrokerURL(
                shown,
                f"unknown option {name}={shown_value} (one of: "
                + ", ".join([*sorted(known), *URL_OPTIONS])
                + ")",
            )
        if not known[name](value):
            raise UnknownBrokerURL(shown, f"option {name}={shown_value}: not a valid value")
    if database and "db" in names:
        raise UnknownBrokerURL(
            shown, f"database given twice, /{database} and ?db=: give one (redis://HOST:PORT/DB)"
        )


@asynccontextmanager
async def open_broker(
    url: str | None = None,
    *,
    create: bool = True,
    retention: Retention | None = None,
    migrate: bool = False,
) -> AsyncIterator[Broker]:
    """Open the broker a URL names, and close it on exit.

    Args:
        url: ``memory://``, ``sqlite:///abs.db``, ``sqlite:rel.db``, ``redis://host:port/db``,
            ``rediss://…``, a Redis unix socket as ``unix:///path/redis.sock?db=N`` (or
            ``redis+unix://…``), a Redis Cluster as ``redis+cluster://host:port`` (any
            node; ``rediss+cluster://…`` for TLS); ``None`` reads ``$GUILD_BROKER``
            (default ``sqlite:guild.db``).
        create: with ``False``, a SQLite file that does not exist is an error rather
            than a new empty database, and so is ``memory://``, which holds nothing
            before it is opened (for commands that only read).
        retention: how long finished jobs are kept (:class:`~guild.Retention`); the
            URL's ``result_ttl``, ``done_ttl``, ``dead_ttl`` and ``keep_payload``
            options override its fields.
        migrate: bring a SQLite file of an older schema up to date in place, with
            no backup, instead of refusing it (``guild migrate`` backs up and checks).

    Raises:
        UnknownBrokerURL: the scheme is unknown or the URL is malformed.
        BrokerUnavailable: the backend cannot be reached, or (``create=False``) there
            is no SQLite database at the path.
        SchemaMismatch: the stored schema or key layout is newer than this guild's,
            or older (and ``migrate`` is false): ``guild migrate`` brings it up to date.
    """
    url = broker_url_from_env(url)
    scheme = check_broker_url(url)
    kept = url_retention(url, retention)
    broker: Broker
    if scheme == "memory":
        if not create:
            raise UnknownBrokerURL(
                url, "memory:// lives inside one process: there is nothing stored to read"
            )
        from .memory import MemoryBroker

        broker = MemoryBroker(retention=kept)
    elif scheme == "sqlite":
        from .sqlite import SqliteBroker

        path = sqlite_path(url)
        if not create and not path.exists():
            raise BrokerUnavailable(f"no database at {path.absolute()}")
        broker = await SqliteBroker.open(
            path, synchronous=sqlite_synchronous(url), retention=kept, migrate=migrate
        )
    else:
        from .redis import RedisBroker

        broker = await RedisBroker.open(redis_client_url(url), retention=kept)
    try:
        yield broker
    finally:
        await broker.aclose()
