"""The observability HTTP server: the dashboard, ``/health``, ``/metrics`` and ``/events``.

A small ASGI application written by hand (a few routes do not need a
framework) served by hypercorn's Trio server inside the app's nursery::

    async with trio.open_nursery() as nursery:
        await nursery.start(app.run, broker)
        port = await nursery.start(functools.partial(serve_http, app, port=8000))

* ``GET /health``: the verdict of :func:`assess` as JSON; 200 when healthy or
  degraded, 503 when unhealthy.
* ``POST /health/acknowledge``: clear the broker issues that stay until
  acknowledged (Redis lost jobs); answers ``{"acknowledged": n}``.
* ``GET /metrics``: the Prometheus text format (every process's in
  multiprocess mode).
* ``/events`` (websocket): every message is a JSON array of events, in the
  order they happened. The first holds one ``hello`` event with every worker's
  state; then come runtime events (``job_started``, ``job_finished``,
  ``worker_state``, …), batched as they were buffered. A client that falls
  ``buffer`` events behind is closed with code 1008 (see :mod:`._hub`).
* ``GET /`` and ``/api/…``: the dashboard, its state and its actions (see
  :mod:`._dashboard`).
* ``GET /process``: only on a ``guild run --processes N`` child's private
  socket (``path``): its report to the parent, which answers for the whole
  run (see :mod:`._report` and :mod:`._fleet_http`).

Who may use the dashboard, ``/events`` and the POSTs is decided by
:mod:`._access`: anyone on a loopback server, only holders of the token on any
other address. ``/health`` and ``/metrics`` stay open to probes and scrapers;
``redact_errors`` takes exception messages out of ``/health``.

The broker is asked for its counts at each ``/health`` and ``/metrics``
request, with a time limit: a broker that does not answer within
``broker_timeout`` seconds is *unreachable*, which is unhealthy.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE

from .._errors import BrokerError, GuildError
from .._job import QueueStats
from ..brokers._ledger import read_all_counts
from ..brokers._protocol import BrokerIssue, Diagnosable
from ..sandbox._held import held_isolation, held_unenforced
from ._access import (
    REDACT_VARIABLE,
    TOKEN_VARIABLE,
    Access,
    Admit,
    Kind,
    Refuse,
    is_loopback,
    judge,
    redact,
)
from ._dashboard import PATHS as DASHBOARD_PATHS
from ._dashboard import Tracker, asked
from ._dashboard import serve as serve_dashboard
from ._events import Instrument
from ._health import Health, Thresholds, assess
from ._hub import Message
from ._memory import memory_fraction
from ._metrics import multiprocess_dir
from ._observe import Observability, _running, observe
from ._report import process_report, recent_failures, running_jobs

if TYPE_CHECKING:
    # Only for annotations: guild._app imports this package (for its events).
    from .._app import Guild

_BATCH = 512
_log = structlog.get_logger("guild.http")
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class ObservabilityApp:
    """The ASGI application behind :func:`serve_http`.

    Args:
        app: the guild app observed.
        observability: its instruments (from :func:`observe`).
        broker_timeout: seconds the broker gets to report its counts.
        memory: reads the fraction of memory in use (None: unknown).
        access: who may use the dashboard, ``/events`` and the actions (see
            :mod:`._access`; default: a loopback server, no token).
        redact: ``/health`` hides exception messages.
        tracker: the recent failures the dashboard shows (it must be among the
            app's instruments to see any).
    """

    def __init__(
        self,
        app: Guild,
        observability: Observability,
        *,
        broker_timeout: float = 2.0,
        memory: Callable[[], float | None] = memory_fraction,
        access: Access | None = None,
        redact: bool = False,
        tracker: Tracker | None = None,
        internal: bool = False,
    ) -> None:
        self.app = app
        self.observability = observability
        self.broker_timeout = broker_timeout
        self._memory = memory
        self.access = access or Access(token=None, loopback=True)
        self.redact = redact
        self.tracker = tracker or Tracker()
        # Served on a `guild run` child's private socket: answers GET /process.
        self.internal = internal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if scope["path"] in DASHBOARD_PATHS:
                await serve_dashboard(self, scope, receive, send)
            else:
                await self._http(scope, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)

    # --- readings --------------------------------------------------------------

    async def _queues(self) -> tuple[Mapping[str, QueueStats] | None, str | None]:
        try:
            broker = self.app.broker
        except GuildError as exc:  # NotRunning: an app that is not running has no broker
            return None, str(exc)
        try:
            with trio.fail_after(self.broker_timeout):
                return await broker.stats(), None
        except trio.TooSlowError:
            return None, f"the broker did not answer within {self.broker_timeout:g}s"
        except BrokerError as exc:
            return None, f"{type(exc).__name__}: {exc}"

    async def _ledger_counts(self) -> dict[str, dict[str, dict[str, float]]]:
        """The broker's Ledger counts, or ``{}`` (no Ledger, not running, no answer)."""
        try:
            broker = self.app.broker
        except GuildError:
            return {}
        return await read_all_counts(broker, self.broker_timeout)

    async def _issues(self) -> tuple[BrokerIssue, ...]:
        try:
            broker = self.app.broker
        except GuildError:
            return ()
        if not isinstance(broker, Diagnosable):
            return ()
        try:
            with trio.fail_after(self.broker_timeout):
                return tuple(await broker.diagnose())
        except (trio.TooSlowError, BrokerError):
            return ()  # the broker check (stats) already says it is unreachable

    async def health(self) -> tuple[Health, float]:
        """Assess the app now: the verdict and the monitor's time it was made at."""
        queues, error = await self._queues()
        issues = await self._issues() if queues is not None else ()
        concurrency = {name: spec.concurrency for name, spec in self.app.specs.items()}
        monitor = self.observability.monitor
        workers = self.app.workers()
        snapshot, now = monitor.snapshot(
            queues=queues,
            broker_error=error,
            memory=self._memory(),
            active={name: stats.running for name, stats in workers.items()},
            concurrency=concurrency,
            broker_errors={
                name: stats.broker_error
                for name, stats in workers.items()
                if stats.broker_error is not None
            },
            broker_damaged={name for name, stats in workers.items() if stats.broker_damaged},
            # Which worker tasks are alive is known only while the app runs; when
            # it does not, the supervisor's last states (stopped, exited) speak.
            alive=set(workers) if self.app.supervisor is not None else None,
            issues=issues,
        )
        return assess(snapshot, monitor.thresholds, now), now

    # --- routes ------------------------------------------------------------------

    async def _http(self, scope: Scope, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path == "/health/acknowledge" and method == "POST":
            verdict = judge(self.access, asked(scope, Kind.EVENTS))
            if isinstance(verdict, Refuse):
                body = json.dumps({"error": verdict.reason}).encode()
                await _respond(send, verdict.status, body, "application/json", method)
                return
            await self._acknowledge(send)
            return
        if path == "/process" and self.internal and method == "GET":
            body = json.dumps(await process_report(self), default=str).encode()
            await _respond(send, 200, body, "application/json", method)
            return
        if path not in ("/health", "/metrics"):
            await _respond(send, 404, b'{"error": "not found"}', "application/json", method)
            return
        if method not in ("GET", "HEAD"):
            await _respond(
                send, 405, b'{"error": "method not allowed"}', "application/json", method
            )
            return
        if path == "/health":
            health, now = await self.health()
            answer = {"app": self.app.name, **health.to_json(now)}
            answer["running"] = running_jobs(self)
            answer["failures"] = recent_failures(self)
            upcoming = self.app.upcoming()
            if upcoming:
                answer["periodic"] = upcoming
            if self.redact:
                # Also the queues' broken and the schedules' failed enqueues.
                answer = redact(answer, _error_texts(health))
            isolation = held_isolation(self.app)
            if isolation is not None:
                answer["sandbox"] = {"isolation": isolation}
                unenforced = held_unenforced(self.app)
                if unenforced:
                    answer["sandbox"]["unenforced_budgets"] = unenforced
            body = json.dumps(answer, separators=(",", ":")).encode()
            await _respond(send, health.http_status, body, "application/json", method)
            return
        queues, _ = await self._queues()
        metrics = self.observability.metrics
        metrics.set_queues(queues)
        metrics.set_ledger(await self._ledger_counts())
        metrics.set_memory(self._memory())
        await _respond(send, 200, metrics.render(), CONTENT_TYPE, method)

    async def _acknowledge(self, send: Send) -> None:
        try:
            broker = self.app.broker
        except GuildError as exc:
            body = json.dumps({"error": str(exc)}).encode()
            await _respond(send, 503, body, "application/json", "POST")
            return
        count = broker.acknowledge() if isinstance(broker, Diagnosable) else 0
        body = json.dumps({"acknowledged": count}).encode()
        await _respond(send, 200, body, "application/json", "POST")

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"] != "/events":
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown path"})
            return
        verdict = judge(self.access, asked(scope, Kind.EVENTS))
        if not isinstance(verdict, Admit):
            # Closed before it was accepted: the handshake is answered 403.
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        with self.observability.hub.subscribe() as subscription:
            await _send_json(send, [self._hello()])
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
                with subscription.scope:
                    await _forward(subscription.receive, send)
                if subscription.dropped:
                    with trio.move_on_after(1.0):
                        await send({"type": "websocket.close", "code": 1008, "reason": "too slow"})
                nursery.cancel_scope.cancel(reason="events feed ended")

    def _hello(self) -> dict[str, Any]:
        running = _running(self.app)
        states = self.observability.monitor.states()
        # Why each worker's broker calls fail now (later changes: worker_broker).
        stats = self.app.workers()
        return {
            "type": "hello",
            "time": time.time(),
            "app": self.app.name,
            "workers": {
                name: {
                    "queue": queue,
                    "state": state,
                    "active": running.get(name, 0),
                    "broker_error": stats[name].broker_error if name in stats else None,
                }
                for name, (queue, state) in sorted(states.items())
            },
        }


def _error_texts(health: Health) -> set[str]:
    """The exception messages in a verdict: what ``redact_errors`` hides."""
    texts = {
        text
        for worker in health.workers.values()
        for text in (worker.last_error, worker.broker_error)
        if text
    }
    texts.update(c.detail for c in health.checks if c.name == "broker" and c.detail)
    return texts


@contextlib.contextmanager
def _removed(app: Guild, instrument: Instrument) -> Iterator[None]:
    try:
        yield
    finally:
        app.instruments.remove(instrument)


async def _forward(receive: trio.MemoryReceiveChannel[Message], send: Send) -> None:
    # One websocket message per batch of whatever is buffered: a send costs
    # several checkpoints, so one event per message falls behind a busy worker.
    async for first in receive:
        batch = [first]
        while len(batch) < _BATCH:
            try:
                batch.append(receive.receive_nowait())
            except (trio.WouldBlock, trio.EndOfChannel):
                break
        await _send_json(send, batch)


async def _send_json(send: Send, messages: list[Message]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(messages, default=str)})


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass  # a client has nothing to say on this feed; ignore what it sends
    scope.cancel(reason="events client left")


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def _respond(send: Send, status: int, body: bytes, content_type: str, method: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def warn_if_disabled(access: Access, host: str) -> None:
    """Log ``dashboard_disabled`` when a server on ``host`` refuses every dashboard visitor."""
    if access.login and access.token is None:
        _log.warning("dashboard_disabled", host=host, reason=f"no ${TOKEN_VARIABLE}")


def _unix_socket(path: str) -> socket.socket:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by a child that was killed: this index's socket now
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(path)
    sock.setblocking(False)
    sock.listen(128)
    return sock


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        # Several `guild run` children share one port; the kernel spreads
        # scrapes over them, and in multiprocess mode each answers for all.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(address)
    sock.setblocking(False)
    sock.listen(128)
    return sock


async def serve_http(
    app: Guild,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    thresholds: Thresholds | None = None,
    reuse_port: bool | None = None,
    path: str | None = None,
    shutdown_trigger: Callable[[], Awaitable[None]] | None = None,
    token: str | None = None,
    redact_errors: bool | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the dashboard at ``/``, ``/health``, ``/metrics`` and ``/events`` until cancelled.

    Args:
        app: the app to observe; its instruments are installed by :func:`observe`.
        host: the address to listen on.
        port: the port (0: any free one; the bound port is what ``started`` gets).
        thresholds: health thresholds (default: the seed's).
        reuse_port: share the port with other processes (default: on in
            multiprocess mode, see :mod:`._metrics`).
        path: listen on this Unix socket instead of ``host:port``, and answer
            ``GET /process`` too (a ``guild run --processes N`` child, whose
            parent serves ``host:port``; ``host`` still decides the access
            rules, and ``started`` gets 0).
        shutdown_trigger: awaited; when it returns the server stops gracefully.
        token: the token the dashboard, ``/events`` and the actions need when
            ``host`` is not loopback (default: ``$GUILD_HTTP_TOKEN``; see
            :mod:`._access`). Without one, a non-loopback server refuses them.
        redact_errors: ``/health`` hides exception messages (default:
            ``$GUILD_HTTP_REDACT`` is ``1``, ``true`` or ``yes``).

    Raises:
        ValueError: the token is empty or has surrounding spaces.

    Resource handling: the listening socket is closed when this returns;
    ``/events`` clients are cut off after a one-second grace.
    """
    # Imported here: hypercorn costs ~90 ms to import, and every `import guild`
    # would pay it although only processes that serve HTTP need it.
    from hypercorn.config import Config, Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    if token is None:
        token = os.environ.get(TOKEN_VARIABLE) or None
    if redact_errors is None:
        redact_errors = os.environ.get(REDACT_VARIABLE, "").lower() in ("1", "true", "yes")
    access = Access(token=token, loopback=is_loopback(host))
    observability = observe(app, thresholds=thresholds)
    tracker = Tracker()
    asgi = ObservabilityApp(
        app,
        observability,
        access=access,
        redact=redact_errors,
        tracker=tracker,
        internal=path is not None,
    )
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 1.0
    config.loglevel = "WARNING"
    config.accesslog = None
    share = multiprocess_dir() is not None if reuse_port is None else reuse_port
    sock = (
        _unix_socket(path) if path is not None else _listening_socket(host, port, reuse_port=share)
    )
    # Warned only once the address is bound: an address that cannot be served
    # is the one error line of `guild run`, with no warning about serving before
    # it. A child of --processes N serves a private socket; its parent warns.
    if path is None:
        warn_if_disabled(access, host)
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    # The tracker listens only while the server runs: only then can the page ask.
    # It takes job_finished alone, which the metrics instrument wants already.
    app.instruments.add(tracker)
    with sock, _removed(app, tracker):
        async with trio.open_nursery() as nursery:
            # Made now, not at the first scrape: from here on a state change
            # reaches its gauge at once, for the processes that read it.
            observability.metrics.make()
            nursery.start_soon(observability.monitor.serve_sampling)
            nursery.start_soon(observability.metrics.serve_flush)
            await nursery.start(
                functools.partial(
                    worker_serve,
                    # hypercorn types ASGI apps with TypedDict scopes; ours reads plain mappings.
                    wrap_app(asgi, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
                    config,
                    sockets=sockets,
                    shutdown_trigger=shutdown_trigger,
                )
            )
            task_status.started(0 if path is not None else sock.getsockname()[1])
