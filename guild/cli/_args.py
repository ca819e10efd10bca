"""Option types that refuse what a command cannot use, before anything is opened.

argparse's own ``type=float`` takes ``nan`` and ``inf``, and ``type=int`` any
count; each type here checks the value is finite and in range, so that a bad
option is a usage error naming the option, never a crash (or a silent
never-ending sleep) later.
"""

from __future__ import annotations

import argparse
import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn
from urllib.parse import urlsplit

from .._errors import GuildError
from .._job import MAX_ID, MAX_KEY, check_field, check_queue_name, check_stored_queue_name
from ..brokers._url import broker_url_from_env, check_broker_url
from ..config._values import LOG_LEVELS, split_address

MAX_SECONDS = 10 * 365 * 86_400
"""Ten years: the most any duration or age flag takes (``--older-than``,
``--duration``); further out is a typo, and a clock sum that large loses its seconds."""


class UsageError(GuildError):
    """The command line is wrong: an unknown option, a missing or malformed value."""


def refuse_memory(url: str | None, effect: str) -> None:
    """Refuse ``memory://`` (given, or from ``$GUILD_BROKER``) for a command whose
    ``effect`` must outlive it: the broker would end with the command, and the
    effect with it, while the command said it was done."""
    if check_broker_url(broker_url_from_env(url)) == "memory":
        raise UsageError(
            f"memory:// lives inside one process: {effect} would be lost when it exits;"
            " use sqlite:PATH or redis://HOST"
        )


class CommandFailed(GuildError):
    """The command line was right but the work failed (exit 1, not 2)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are raised, not printed with the usage text:
    ``guild.cli.main`` prints every error as the same single line.

    Options are taken by their whole name only (``allow_abbrev=False``): with
    argparse's default, ``--proc 2`` meant ``--processes 2``, and an option
    added later would change what an old command line means or make it
    ambiguous. Every command's and action's parser is made by ``add_parser``
    as this class (argparse's subparsers copy the parent's class), so the rule
    holds for all of them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see: {self.prog} --help)")


def number(
    low: float | None = None,
    high: float | None = None,
    *,
    above: float | None = None,
) -> Callable[[str], float]:
    """A finite float, ``>= low`` / ``> above`` / ``<= high`` where given."""

    def parse(text: str) -> float:
        try:
            value = float(_ascii(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        _check_range(value, text, low, high, above)
        return value

    return parse


def integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    """A whole number, ``>= low`` and ``<= high`` where given."""

    def parse(text: str) -> int:
        try:
            value = int(_ascii(text))
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        _check_range(value, text, low, high, None)
        return value

    return parse


def _ascii(text: str) -> str:
    """``text`` when it is ASCII; Python's ``int`` and ``float`` also read other
    scripts' digits (``'٣'`` is 3), which no one types for a count on purpose."""
    if not text.isascii():
        raise ValueError(text)
    return text


def _check_range(
    value: float, text: str, low: float | None, high: float | None, above: float | None
) -> None:
    if low is not None and value < low:
        raise argparse.ArgumentTypeError(f"expected at least {_show(low)}, got {text}")
    if above is not None and value <= above:
        raise argparse.ArgumentTypeError(f"expected more than {_show(above)}, got {text}")
    if high is not None and value > high:
        raise argparse.ArgumentTypeError(f"expected at most {_show(high)}, got {text}")


def _show(bound: float) -> str:
    return f"{bound:,}" if isinstance(bound, int) else f"{bound:,g}"


@contextlib.contextmanager
def _refused(what: str | None = None) -> Iterator[None]:
    """A ValueError from a check of the library's, as argparse's error for a bad
    value: the check's own message, after ``what`` where given."""
    try:
        yield
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{what} ({exc})" if what else str(exc)) from None


def queue_name(text: str) -> str:
    """A queue name by the library's one rule (:func:`guild._job.check_queue_name`)."""
    with _refused():
        return check_queue_name(text)


def stored_queue_name(text: str) -> str:
    """A queue name to read or clear (``guild purge``, ``guild dlq --queue``): the
    rule of :func:`queue_name` without its length limit, so that a queue named
    before the limit can still be emptied (:func:`guild._job.check_stored_queue_name`)."""
    with _refused():
        return check_stored_queue_name(text)


def idempotency_key(text: str) -> str:
    """An idempotency key by the rule of ``Job.key`` (:func:`guild._job.check_field`)."""
    if not text.strip():
        raise argparse.ArgumentTypeError(f"expected a non-empty key, got {text!r}")
    with _refused():
        return check_field("key", text, MAX_KEY, label=False)


def identifier(what: str) -> Callable[[str], str]:
    """A job or workflow id to look up: not empty, at most ``MAX_ID`` characters,
    no control characters (none of guild's own ids is longer than 26)."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        with _refused():
            return check_field(what, text, MAX_ID)

    return parse


def broker_url(text: str) -> str:
    """A URL some broker accepts (checked, not opened); an empty one is refused
    rather than read as "use the default", which would hide the mistake."""
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a broker URL, got ''")
    with _refused():
        check_broker_url(text)
    return text


def http_url(text: str) -> str:
    """The base URL of a running app's HTTP server: ``http(s)://host[:port]``, or
    a bare ``host:port`` (taken as ``http://``)."""
    full = text if "://" in text else "http://" + text
    if not full.isprintable() or any(c.isspace() for c in full):
        # urlsplit drops tabs and newlines, so the check below would pass a URL
        # that is not the one then dialled (and an error line would break in two).
        raise argparse.ArgumentTypeError(f"malformed URL {text!r} (it holds whitespace)")
    with _refused(f"malformed URL {text!r}"):
        parts = urlsplit(full)
        parts.port  # noqa: B018  (parsing it is the check: a non-number raises)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"expected http://HOST:PORT, got {text!r}")
    if parts.port == 0 or parts.netloc.endswith(":"):
        # An empty or zero port would be dialled as the scheme's default, 80 or 443.
        raise argparse.ArgumentTypeError(f"expected a port from 1 to 65535 in {text!r}")
    if "@" in parts.netloc:
        # Echoed in every error line; the token goes in $GUILD_HTTP_TOKEN.
        raise argparse.ArgumentTypeError(
            "expected http://HOST:PORT without a user or password ($GUILD_HTTP_TOKEN holds"
            " the token)"
        )
    if parts.query or parts.fragment or "?" in full or "#" in full:
        # The endpoint (/health, /events) is added to the end of the URL.
        raise argparse.ArgumentTypeError(
            f"expected http://HOST:PORT without a ?query or #fragment, got {text!r}"
        )
    _check_host(parts.hostname, text)
    return full


def _check_host(host: str, text: str) -> None:
    """Refuse a host name no resolver takes (``a..b``, a label over 63 characters),
    which the HTTP clients would fail on with an encoding error instead."""
    if host.startswith("[") or ":" in host:  # an IPv6 address
        return
    with _refused(f"malformed host in {text!r}"):  # a UnicodeError is a ValueError
        host.encode("idna")


def host_port(text: str) -> str:
    """An address to listen on, ``HOST:PORT`` (:func:`guild.config._schema.split_address`)."""
    with _refused():
        split_address(text)
    return text


def log_level(text: str) -> str:
    """A log level by name, in any case (``INFO`` is ``info``)."""
    if text.lower() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(LOG_LEVELS)}, got {text!r}")
    return text.lower()


def non_empty(what: str) -> Callable[[str], str]:
    """A string that is not empty or only whitespace (a job id, a URL)."""

    def parse(text: str) -> str:
        if not text.strip():
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return text

    return parse


def wants_json(argv: Sequence[str]) -> bool:
    """Whether errors should be JSON: decided from the raw argv, since an error may
    come before (or instead of) a parsed ``--json``."""
    return "--json" in argv[: argv.index("--")] if "--" in argv else "--json" in argv


def add_broker_flags(parser: argparse.ArgumentParser) -> None:
    """``--broker URL`` and ``--json``, spelled alike by every command that reads a broker."""
    parser.add_argument(
        "--broker",
        type=broker_url,
        help="broker URL (default: $GUILD_BROKER, else sqlite:guild.db)",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")


def repeat_broker_flags(*actions: argparse.ArgumentParser) -> None:
    """The command's ``--broker`` and ``--json`` again on each action, so they may
    also follow it (``guild dlq list --json``). SUPPRESS as the default keeps the
    value given before the action when the flag is not repeated after it."""
    for action in actions:
        action.add_argument(
            "--broker", type=broker_url, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
        action.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )
