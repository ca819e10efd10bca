"""The parent of ``guild run --processes N``: supervise the children, and serve
one view of the run over HTTP (see :mod:`guild.observability._fleet_http`).

The parent spawns the children first and imports nothing of the app: each
child reports when it is ready (its banner facts) or why it cannot start
(:func:`guild.supervision._processes.supervise_processes`). The first ready
report makes the banner; with ``--http``, it also names the app the parent's
server answers for, so the server starts then (its address is checked before
any child starts: a bad one is one usage error).

The children serve their endpoints on Unix sockets in a private directory
(made here, mode 0700, removed at the end); the parent binds ``--http``
itself, so a scrape always reaches the one server that answers for every process.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import tempfile
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import structlog
import trio

from .._groups import unwrap
from ..supervision._processes import OnKilled, StartFailed, supervise_processes
from ..supervision._supervisor import ChildSpec, open_services
from ._args import UsageError

if TYPE_CHECKING:
    from ..observability._fleet_http import Fleet
    from ..observability._health import Thresholds

_log = structlog.get_logger("guild.cli")


@attrs.frozen
class Ready:
    """What a child of ``--processes N`` reports once it has started.

    Attributes:
        banner: its start-up facts (``guild.cli._banner.banner``), as one process.
        warnings: the start-up warnings it would print.
    """

    banner: dict[str, Any]
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"banner": self.banner, "warnings": list(self.warnings)}

    @classmethod
    def from_json(cls, value: Any) -> Ready | None:
        """The report read back (None: not one; a child of another version, say)."""
        if not isinstance(value, dict):
            return None
        banner, warnings = value.get("banner"), value.get("warnings", [])
        if not isinstance(banner, dict) or not isinstance(banner.get("app"), str):
            return None
        if not isinstance(warnings, list) or not all(isinstance(w, str) for w in warnings):
            return None
        return cls(banner, tuple(warnings))


Announce = Callable[[Ready, tuple[str, int] | None], None]
"""Called once, with the first ready child's report and the address served (if any)."""


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


def check_address(host: str, port: int) -> None:
    """Bind ``host:port`` once and let it go: an address the server could not bind
    is the one usage error, before any child starts.

    Raises:
        UsageError: it cannot be bound.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(address)
    except OSError as exc:
        raise UsageError(f"--http {host}:{port}: cannot listen ({exc})") from None


async def supervise_fleet(
    child: list[str],
    processes: int,
    *,
    grace: float,
    env: dict[str, str],
    url: str,
    on_killed: OnKilled,
    http: FleetHTTP | None,
    sockets: str | None,
    metrics_dir: str | None,
    announce: Announce,
) -> int:
    """Supervise ``processes`` copies of ``child``; with ``http``, serve the run's view.

    ``announce`` is called once, with the first ready child's report (after
    ``http`` is bound, with the address it was bound to).

    Raises:
        UsageError: ``http``'s address cannot be bound.
        StartFailed: a child said it cannot start (see ``supervise_processes``).
    """
    first: list[Ready] = []
    ready = trio.Event()

    def on_ready(index: int, pid: int, value: Any) -> None:
        report = Ready.from_json(value)
        if report is None:
            _log.warning("bad_ready_report", index=index, pid=pid)
        elif not first:
            first.append(report)
            ready.set()
            if http is None:
                announce(report, None)

    if http is None or sockets is None:
        return await supervise_processes(
            child, processes, grace=grace, env=env, on_killed=on_killed, on_ready=on_ready
        )
    check_address(http.host, http.port)
    # Here, not at the top: only a run with --http loads the server's modules.
    from ..observability._fleet_http import Fleet

    fleet = Fleet(processes, sockets, metrics_dir)
    bound: list[int] = []  # the port the view listens on, once it does
    view = functools.partial(
        _serve_view, http, fleet, url, processes, ready, first, announce, bound
    )
    try:
        with unwrap(UsageError, StartFailed):
            async with (
                # The view is a service: a crash in it is restarted (see
                # supervision.open_services), never the end of the children.
                open_services("fleet.services") as services,
                trio.open_nursery() as nursery,
            ):
                # Its first start (waiting for a ready child, then binding) is
                # raised here: an address that cannot be bound is the one error line.
                nursery.start_soon(services.start_child, ChildSpec(name="http", start=view))
                code = await supervise_processes(
                    child,
                    processes,
                    grace=grace,
                    env=env,
                    on_killed=on_killed,
                    on_started=fleet.started,
                    on_exited=fleet.exited,
                    on_ready=on_ready,
                )
                nursery.cancel_scope.cancel(reason="the children stopped")
        return code
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


async def _serve_view(
    http: FleetHTTP,
    fleet: Fleet,
    url: str,
    processes: int,
    ready: trio.Event,
    first: list[Ready],
    announce: Announce,
    bound: list[int],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Once a child is ready (its report names the app), serve the run's view until
    cancelled; reports started once it listens.

    ``bound`` holds the port of its first start: a restart binds it again, and
    only the first start warns, logs and announces the banner."""
    from ..brokers._url import open_broker
    from ..observability._access import REDACT_VARIABLE, TOKEN_VARIABLE, Access, is_loopback
    from ..observability._fleet_http import FleetApp, serve_fleet_http
    from ..observability._http import warn_if_disabled

    token = http.token if http.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    redact = http.redact
    if redact is None:
        redact = os.environ.get(REDACT_VARIABLE, "").lower() in ("1", "true", "yes")
    await ready.wait()
    async with open_broker(url) as broker, trio.open_nursery() as nursery:
        public = (
            f"{http.host}:{http.port}" if ":" not in http.host else f"[{http.host}]:{http.port}"
        )
        access = Access(token=token, loopback=is_loopback(http.host))
        asgi = FleetApp(
            first[0].banner["app"],
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
                    functools.partial(
                        serve_fleet_http,
                        asgi,
                        host=http.host,
                        port=bound[0] if bound else http.port,
                    )
                )
        except OSError as exc:
            raise UsageError(f"--http {http.host}:{http.port}: cannot listen ({exc})") from None
        # Only now: an address that cannot be bound is the one error line, with
        # no warning about serving it before (the children serve private sockets).
        task_status.started()
        if not bound:
            bound.append(port)
            warn_if_disabled(access, http.host)
            _log.info("http_listening", host=http.host, port=port, processes=processes)
            announce(first[0], (http.host, port))
