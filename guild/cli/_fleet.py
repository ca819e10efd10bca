"""The parent of ``guild run --processes N``: supervise the children, and serve
one view of the run over HTTP (see :mod:`guild.observability._fleet_http`).

The children serve their endpoints on Unix sockets in a private directory
(made here, mode 0700, removed at the end); the parent binds ``--http``
itself, so a bad address is one usage error before any child starts, and a
scrape always reaches the one server that answers for every process.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Callable

import attrs
import structlog
import trio

from .._groups import unwrap
from ..brokers._url import open_broker
from ..observability._access import REDACT_VARIABLE, TOKEN_VARIABLE, Access, is_loopback
from ..observability._fleet_http import Fleet, FleetApp, serve_fleet_http
from ..observability._health import Thresholds
from ..observability._http import warn_if_disabled
from ..supervision import supervise_processes
from ..supervision._processes import OnKilled
from ._args import UsageError

_log = structlog.get_logger("guild.cli")


@attrs.frozen(kw_only=True)
class FleetHTTP:
    """What the parent serves, and how.

    Attributes:
        host: the public address.
        port: its port (0: any free one).
        token: the dashboard's token (None: ``$GUILD_HTTP_TOKEN``).
        redact: ``/health`` hides exception messages (None: ``$GUILD_HTTP_REDACT``).
        thresholds: health thresholds (None: the defaults).
    """

    host: str
    port: int
    token: str | None = None
    redact: bool | None = None
    thresholds: Thresholds | None = None


def socket_dir() -> str:
    """A fresh private directory for the children's sockets (0700, from mkdtemp)."""
    return tempfile.mkdtemp(prefix="guild-run-")


async def supervise_fleet(
    child: list[str],
    processes: int,
    *,
    grace: float,
    env: dict[str, str],
    url: str,
    app_name: str,
    on_killed: OnKilled,
    http: FleetHTTP | None,
    sockets: str | None,
    metrics_dir: str | None,
    announce: Callable[[tuple[str, int] | None], None],
) -> int:
    """Supervise ``processes`` copies of ``child``; with ``http``, serve the run's view.

    Raises:
        UsageError: ``http``'s address cannot be bound.
    """
    if http is None or sockets is None:
        announce(None)
        return await supervise_processes(
            child, processes, grace=grace, env=env, on_killed=on_killed
        )
    token = http.token if http.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    redact = http.redact
    if redact is None:
        redact = os.environ.get(REDACT_VARIABLE, "").lower() in ("1", "true", "yes")
    fleet = Fleet(processes, sockets, metrics_dir)
    try:
        async with open_broker(url) as broker, trio.open_nursery() as nursery:
            public = (
                f"{http.host}:{http.port}" if ":" not in http.host else f"[{http.host}]:{http.port}"
            )
            access = Access(token=token, loopback=is_loopback(http.host))
            asgi = FleetApp(
                app_name,
                fleet,
                broker,
                host=public,
                access=access,
                thresholds=http.thresholds,
                redact=redact,
            )
            try:
                with unwrap(OSError):
                    port: int = await nursery.start(
                        functools.partial(serve_fleet_http, asgi, host=http.host, port=http.port)
                    )
            except OSError as exc:
                raise UsageError(f"--http {http.host}:{http.port}: cannot listen ({exc})") from None
            # Only now: an address that cannot be bound is the one error line, with
            # no warning about serving it before (the children serve private sockets).
            warn_if_disabled(access, http.host)
            _log.info("http_listening", host=http.host, port=port, processes=processes)
            announce((http.host, port))
            code = await supervise_processes(
                child,
                processes,
                grace=grace,
                env=env,
                on_killed=on_killed,
                on_started=fleet.started,
                on_exited=fleet.exited,
            )
            nursery.cancel_scope.cancel(reason="the children stopped")
        return code
    finally:
        shutil.rmtree(sockets, ignore_errors=True)
