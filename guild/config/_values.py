"""The values a guild.toml and the command line share: log levels and formats,
bounds, and the rule for an address to listen on.

Apart from the file's schema (:mod:`._schema`) because the ``guild`` command's
options take them: a ``guild run`` of ``module:attribute`` reads no file and
builds none of the schema's classes.
"""

from __future__ import annotations

import ipaddress

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("auto", "json", "console")
MAX_PROCESSES = 1024
"""As ``guild run --processes``: more is a typo, and would fork that many."""
MAX_CONCURRENCY = 100_000
"""As ``guild run --concurrency`` (and ``guild config show --concurrency``)."""

ADDRESS = '"HOST:PORT" with a port from 0 to 65535'
"""What an address to listen on must look like (``--http``, ``guild.http``)."""


def split_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:PORT`` for IPv6) into its parts: the one rule for
    an address to listen on, from the command line or a guild.toml.

    Raises:
        ValueError: not of that form, or a host no resolver takes (``a..b``).
    """
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected {ADDRESS}, got {text!r}")
    if host.startswith("[") and host.endswith("]"):  # [::1]: only an IPv6 address
        host = host[1:-1]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"expected {ADDRESS}, got {text!r}") from None
        return host, int(port)
    # A name or an IPv4 address: no colon (``h:80:80``, ``http://h:80``), no
    # bracket, nothing a resolver cannot take (``a..b``, a label over 63 bytes).
    try:
        if ":" in host or "[" in host or "]" in host or "/" in host:
            raise UnicodeError
        host.encode("idna")
    except UnicodeError:
        raise ValueError(f"expected {ADDRESS}, got {text!r}") from None
    return host, int(port)


CANARY_OPTIONS = ("stages", "soak", "error_rate", "p95", "min_jobs")
"""Keys of ``[canary]``: the fields of ``guild.CanaryPolicy``. One policy for every
queue a canary serves, as ``guild run --canary`` takes one."""
CANARY_MAX_SOAK = 30 * 86_400
CANARY_MAX_P95 = 86_400
CANARY_MAX_MIN_JOBS = 1_000_000_000
"""Bounds of ``soak`` and ``p95`` (seconds) and ``min_jobs``, in ``[canary]`` and in
the flags (``--soak`` / ``--canary-soak`` …): more is a typo, and would hold a
stage, or pass any latency, for ever."""
