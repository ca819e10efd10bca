"""The HTTP server of a ``guild run --processes N`` parent: one view of the run.

The parent binds the public ``HOST:PORT``; each child serves its own
endpoints on a Unix socket in a private directory (``process-<i>.sock``,
mode 0700, see :func:`serve_http`'s ``path``). Per request the parent asks
every child that is up, concurrently and with a time limit, and answers for
the whole run:

* ``GET /health``: every child's ``/process`` report merged by
  :func:`._fleet.fleet_health`, with the broker's counts and issues read by
  the parent itself (one broker connection, whatever the number of children).
* ``GET /metrics``: the sum over every process that ever ran in this run,
  from the shared prometheus-client directory (counters survive a child's
  death), then the parent's own series: queue depth, broker up, memory, the
  Ledger's counts, and ``guild_process_*`` per child.
* ``/events``: one websocket to each child, fanned in; every event carries
  ``process`` (the child's index). The first message is one merged ``hello``;
  a child that comes back after a restart is announced by ``process_hello``.
* ``POST /health/acknowledge``: sent on to every child; the answer sums them.
* The dashboard (``/``, its assets, ``/api/state`` and the actions) is served
  by the parent itself, under the same :mod:`._access` rules as a single
  process: ``/api/state`` answers for the whole run (every process's workers,
  running jobs and recent failures, from the same reports as ``/health``; the
  broker's counts, dead letters and workflows read once, by the parent), and
  the actions (requeue, cancel) go through the parent's broker connection,
  which reaches a job whichever process holds it. The page's live updates come
  from the parent's ``/events``.
* Anything else is relayed to the child with the lowest index that is up.

Why the parent and not the broker or a shared port: the parent already knows
which children run (it supervises them), it answers even while every child is
down, it costs no broker round trip or storage per process, and a scrape always
reaches the same server. See ``docs/operations.md``.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import structlog
import trio
from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.multiprocess import MultiProcessCollector

from .._errors import BrokerError, BrokerUnavailable
from .._job import QueueStats
from ..brokers._ledger import read_all_counts
from ..brokers._protocol import Broker, BrokerIssue, Diagnosable
from ._access import Access, Admit, Kind, Refuse, judge, redact
from ._dashboard import PATHS as DASHBOARD_PATHS
from ._dashboard import Site, asked, broker_lists, health_broker_error, serve_site
from ._fleet import Member, dashboard_workers, fleet_health
from ._health import Thresholds
from ._memory import memory_fraction
from ._metrics import QUEUE_STATUSES, _generate
from ._multiprocess import process_exited

_log = structlog.get_logger("guild.http")
Scope = Mapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_RELAYED_HEADERS = frozenset({"content-type", "set-cookie", "location", "cache-control"})
_RELAYED_HEADERS |= {
    "content-security-policy",
    "x-content-type-options",
    "referrer-policy",
    "x-frame-options",
}
_RECONNECT = 0.2


class Fleet:
    """The parent's record of its children, kept by ``supervise_processes``'s hooks.

    Args:
        count: how many children.
        directory: where each child's socket is (made 0700 by the caller).
        metrics_dir: the shared prometheus-client directory (a child that exits
            has its live gauges forgotten there).
    """

    def __init__(self, count: int, directory: str, metrics_dir: str | None = None) -> None:
        self.count = count
        self.directory = directory
        self.metrics_dir = metrics_dir
        self.pids: dict[int, int] = {}
        self.up = dict.fromkeys(range(count), False)
        self.starts = dict.fromkeys(range(count), 0)
        self.changed = trio.Event()

    def socket(self, index: int) -> str:
        return f"{self.directory}/process-{index}.sock"

    def started(self, index: int, pid: int) -> None:
        self.pids[index] = pid
        self.up[index] = True
        self.starts[index] += 1
        self._notify()

    def exited(self, index: int, pid: int, code: int) -> None:
        if self.pids.get(index) == pid:
            self.up[index] = False
        if self.metrics_dir is not None:
            process_exited(pid, self.metrics_dir)
        self._notify()

    def restarts(self, index: int) -> int:
        return max(0, self.starts[index] - 1)

    def _notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


@attrs.frozen(kw_only=True)
class _Reading:
    queues: Mapping[str, QueueStats] | None
    error: str | None
    issues: tuple[BrokerIssue, ...]


class FleetApp:
    """The parent's ASGI application (see the module docstring).

    Args:
        app: the app's name.
        fleet: the children.
        broker: the parent's own connection, for queue counts and issues.
        host: the public address (its ``Host`` is what children are asked with).
        access: the dashboard's and ``/events``' rules, as in a single process.
        thresholds: health thresholds, as the children's.
        redact: ``/health`` hides exception messages.
        timeout: seconds a child (or the broker) gets to answer.
    """

    def __init__(
        self,
        app: str,
        fleet: Fleet,
        broker: Broker | None,
        *,
        host: str,
        access: Access,
        thresholds: Thresholds | None = None,
        redact: bool = False,
        timeout: float = 2.0,
        memory: Callable[[], float | None] = memory_fraction,
    ) -> None:
        self.app = app
        self.fleet = fleet
        self.broker = broker
        self.host = host
        self.access = access
        self.thresholds = thresholds or Thresholds()
        self.redact = redact
        self.timeout = timeout
        self._memory = memory
        self._registry = CollectorRegistry(auto_describe=True)
        r = self._registry
        self._queue = Gauge(
            "guild_queue_jobs",
            "Jobs in the broker by queue and status.",
            ("app", "queue", "status"),
            registry=r,
        )
        self._broker_up = Gauge(
            "guild_broker_up", "1 if the broker answered the last scrape.", ("app",), registry=r
        )
        self._memory_ratio = Gauge(
            "guild_memory_usage_ratio", "Fraction of the memory limit in use.", ("app",), registry=r
        )
        self._ledger = Gauge(
            "guild_ledger_count",
            "Durable counts workers keep in the broker's Ledger.",
            ("app", "namespace", "key", "name"),
            registry=r,
        )
        process = ("app", "process")
        self._up = Gauge("guild_process_up", "1 while the child answers.", process, registry=r)
        self._restarts = Gauge(
            "guild_process_restarts",
            "Times the parent started the child again.",
            process,
            registry=r,
        )
        self._processed = Gauge(
            "guild_process_jobs_processed",
            "Jobs done by the child since it (last) started.",
            process,
            registry=r,
        )
        self._failed = Gauge(
            "guild_process_jobs_failed",
            "Failed attempts of the child since it (last) started.",
            process,
            registry=r,
        )
        self._active = Gauge(
            "guild_process_jobs_active", "Jobs the child runs now.", process, registry=r
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "websocket":
            await self._websocket(scope, receive, send)
        elif kind == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # --- asking the children ------------------------------------------------------

    def _client(self, index: int) -> Any:
        import httpx  # here: `guild run` without --http never needs it

        transport = httpx.AsyncHTTPTransport(uds=self.fleet.socket(index))
        return httpx.AsyncClient(
            transport=transport, base_url=f"http://{self.host}", timeout=self.timeout
        )

    def _headers(self) -> dict[str, str]:
        # The children judge access as this server does: same Host, and the token.
        token = self.access.token
        return {"authorization": f"Bearer {token}"} if token else {}

    async def _report(self, index: int) -> Member:
        pid = self.fleet.pids.get(index)
        restarts = self.fleet.restarts(index)
        if pid is None:
            return Member(index=index, pid=None, up=False, error="not started yet")
        try:
            async with self._client(index) as client:
                response = await client.get("/process")
            response.raise_for_status()
            report = response.json()
        except Exception as exc:  # any failure to answer is "no report", never a 500
            up = self.fleet.up[index]
            why = "not running; being restarted" if not up else f"{type(exc).__name__}: {exc}"
            return Member(index=index, pid=pid, restarts=restarts, up=up, error=why)
        return Member(index=index, pid=pid, restarts=restarts, up=True, report=report)

    async def members(self) -> list[Member]:
        """Every child's report (or why there is none), in index order."""
        found: dict[int, Member] = {}

        async def one(index: int) -> None:
            found[index] = await self._report(index)

        async with trio.open_nursery() as nursery:
            for index in range(self.fleet.count):
                nursery.start_soon(one, index)
        return [found[i] for i in range(self.fleet.count)]

    async def _read_broker(self) -> _Reading:
        if self.broker is None:
            return _Reading(queues=None, error="no broker connection", issues=())
        try:
            with trio.fail_after(self.timeout):
                queues = await self.broker.stats()
                issues: tuple[BrokerIssue, ...] = ()
                if isinstance(self.broker, Diagnosable):
                    issues = tuple(await self.broker.diagnose())
            return _Reading(queues=queues, error=None, issues=issues)
        except trio.TooSlowError:
            return _Reading(
                queues=None,
                error=f"the broker did not answer within {self.timeout:g}s",
                issues=(),
            )
        except BrokerError as exc:
            return _Reading(queues=None, error=f"{type(exc).__name__}: {exc}", issues=())

    async def health(self) -> tuple[dict[str, Any], int]:
        """The run's ``/health`` body and HTTP status."""
        members, body, status = await self._merged()
        if self.redact:
            body = _redacted(body, members)
        return body, status

    async def _merged(self) -> tuple[list[Member], dict[str, Any], int]:
        members = await self.members()
        reading = await self._read_broker()
        body, status = fleet_health(
            self.app,
            members,
            queues=reading.queues,
            broker_error=reading.error,
            issues=reading.issues,
            memory=self._memory(),
            thresholds=self.thresholds,
            now=time.monotonic(),
        )
        return members, body, status

    async def dashboard_state(self) -> dict[str, Any]:
        """The dashboard's ``/api/state`` for the whole run (see the module docstring).

        Not redacted, as in a single process: only those the access rules admit
        read it. A child that redacts has already hidden its failures' errors.
        """
        members, body, _ = await self._merged()
        dead, workflows, broker_now = None, None, None
        if self.broker is not None:
            dead, workflows, broker_now = await broker_lists(self.broker, self.timeout)
        return {
            "app": self.app,
            "time": time.time(),
            "broker_time": broker_now,
            "login": self.access.login,
            "status": body["status"],
            "broker_error": health_broker_error(body),
            "queues": body["queues"],
            "workers": dashboard_workers(body, members),
            "processes": {
                index: {key: process[key] for key in ("pid", "up", "restarts", "status", "error")}
                for index, process in body["processes"].items()
            },
            "running": body["running"],
            "failures": body["failures"],
            "dead": dead,
            "workflows": workflows,
        }

    def _dashboard_broker(self) -> Broker:
        if self.broker is None:
            raise BrokerUnavailable("the parent has no broker connection")
        return self.broker

    @property
    def _site(self) -> Site:
        return Site(
            access=self.access,
            timeout=self.timeout,
            state=self.dashboard_state,
            broker=self._dashboard_broker,
        )

    # --- routes ---------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path, method = scope["path"], scope["method"]
        if path in ("/health", "/metrics") and method in ("GET", "HEAD"):
            if path == "/health":
                body, status = await self.health()
                data = json.dumps(body, separators=(",", ":"), default=str).encode()
                await _respond(send, status, data, "application/json", method)
            else:
                await _respond(send, 200, await self.metrics(), CONTENT_TYPE, method)
            return
        if path == "/health/acknowledge" and method == "POST":
            verdict = judge(self.access, asked(scope, Kind.EVENTS))
            if isinstance(verdict, Refuse):
                data = json.dumps({"error": verdict.reason}).encode()
                await _respond(send, verdict.status, data, "application/json", method)
                return
            total = 0
            for index in range(self.fleet.count):
                if self.fleet.up[index]:
                    answer = await self._relay_one(index, "POST", path, b"", [], self._headers())
                    if answer is not None and answer[0] == 200:
                        total += int(json.loads(answer[2]).get("acknowledged", 0))
            data = json.dumps({"acknowledged": total}).encode()
            await _respond(send, 200, data, "application/json", method)
            return
        if path in DASHBOARD_PATHS:
            await serve_site(self._site, scope, receive, send)
            return
        await self._relay(scope, receive, send)

    async def _relay(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A path the parent does not serve: relayed to the first child that is up."""
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in scope.get("headers", ())
            if name.lower() not in (b"content-length", b"connection", b"transfer-encoding")
        ]
        target = scope["path"]
        if scope.get("query_string"):
            target += "?" + scope["query_string"].decode("latin-1")
        for index in range(self.fleet.count):
            if not self.fleet.up[index]:
                continue
            answer = await self._relay_one(index, scope["method"], target, body, headers, {})
            if answer is not None:
                status, reply_headers, data = answer
                await send(
                    {"type": "http.response.start", "status": status, "headers": reply_headers}
                )
                await send({"type": "http.response.body", "body": data})
                return
        data = json.dumps({"error": "no process of this run is up"}).encode()
        await _respond(send, 503, data, "application/json", scope["method"])

    async def _relay_one(
        self,
        index: int,
        method: str,
        target: str,
        body: bytes,
        headers: list[tuple[str, str]],
        extra: Mapping[str, str],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        try:
            async with self._client(index) as client:
                response = await client.request(
                    method, target, content=body, headers=[*headers, *extra.items()]
                )
        except Exception as exc:  # a child between restarts: try the next one
            _log.debug("relay_failed", process=index, error=str(exc))
            return None
        reply = [
            (name.encode("latin-1"), value.encode("latin-1"))
            for name, value in response.headers.multi_items()
            if name.lower() in _RELAYED_HEADERS
        ]
        reply.append((b"content-length", str(len(response.content)).encode()))
        return response.status_code, reply, response.content

    async def metrics(self) -> bytes:
        """The run's Prometheus text (see the module docstring)."""
        members = await self.members()
        reading = await self._read_broker()
        app = self.app
        self._broker_up.labels(app).set(0 if reading.queues is None else 1)
        for name, stats in (reading.queues or {}).items():
            if stats.broken is not None:
                continue  # not read (QueueStats.broken): no made-up zeros, as in a process
            for status in QUEUE_STATUSES:
                self._queue.labels(app, name, status).set(getattr(stats, status))
        memory = self._memory()
        if memory is not None:
            self._memory_ratio.labels(app).set(memory)
        for namespace, by_key in (await self._ledger_counts()).items():
            for key, numbers in by_key.items():
                for name, value in numbers.items():
                    self._ledger.labels(app, namespace, key, name).set(value)
        for member in members:
            process = str(member.index)
            workers = (member.report or {}).get("workers", {}).values()
            self._up.labels(app, process).set(1 if member.report is not None else 0)
            self._restarts.labels(app, process).set(member.restarts)
            self._processed.labels(app, process).set(sum(w["processed"] for w in workers))
            self._failed.labels(app, process).set(sum(w["failed_total"] for w in workers))
            self._active.labels(app, process).set(sum(w["active"] for w in workers))
        text = _generate(self._registry)
        if self.fleet.metrics_dir is not None:
            merged = CollectorRegistry()
            MultiProcessCollector(merged, path=self.fleet.metrics_dir)  # type: ignore[no-untyped-call]
            text = _generate(merged) + text
        return text

    async def _ledger_counts(self) -> dict[str, dict[str, dict[str, float]]]:
        return await read_all_counts(self.broker, self.timeout)

    # --- /events --------------------------------------------------------------------

    async def _websocket(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        if scope["path"] != "/events":
            await send({"type": "websocket.close", "code": 1008, "reason": "unknown path"})
            return
        if not isinstance(judge(self.access, asked(scope, Kind.EVENTS)), Admit):
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "websocket.accept"})
        feed = _Feed(self.fleet.count)
        async with trio.open_nursery() as nursery:
            feed.scope = nursery.cancel_scope
            nursery.start_soon(_until_disconnect, receive, nursery.cancel_scope)
            for index in range(self.fleet.count):
                nursery.start_soon(self._follow, index, feed)
            with trio.move_on_after(self.timeout):
                await feed.greeted.wait()
            await _send_json(send, [self._hello(feed.hellos)])
            async for batch in feed.receive:
                await _send_json(send, batch)
        if feed.dropped:
            with trio.move_on_after(1.0):
                await send({"type": "websocket.close", "code": 1008, "reason": "too slow"})

    def _hello(self, hellos: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
        workers: dict[str, dict[str, Any]] = {}
        for index in sorted(hellos):
            for name, worker in hellos[index].get("workers", {}).items():
                seen = workers.setdefault(
                    name, {"queue": worker["queue"], "state": worker["state"], "active": 0}
                )
                seen["active"] += worker["active"]
                if worker["state"] != "running":
                    seen["state"] = worker["state"]
                if worker.get("broker_error"):  # any process's: a damaged key fails them all
                    seen["broker_error"] = worker["broker_error"]
        return {
            "type": "hello",
            "time": time.time(),
            "app": self.app,
            "workers": workers,
            "processes": {
                str(index): {"pid": self.fleet.pids.get(index), "workers": hello.get("workers", {})}
                for index, hello in sorted(hellos.items())
            },
        }

    async def _follow(self, index: int, feed: _Feed) -> None:
        """Forward child ``index``'s events, tagged with it, across its restarts."""
        from trio_websocket import ConnectionClosed, HandshakeError, wrap_client_stream

        greeted = False
        while True:
            if self.fleet.pids.get(index) is None:
                await self.fleet.changed.wait()
                continue
            try:
                stream = await trio.open_unix_socket(self.fleet.socket(index))
            except OSError:
                feed.absent(index)  # down now: the first hello does without it
                await trio.sleep(_RECONNECT)
                continue
            headers = [(k.encode(), v.encode()) for k, v in self._headers().items()]
            try:
                async with trio.open_nursery() as inner:
                    ws = await wrap_client_stream(
                        inner, stream, self.host, "/events", extra_headers=headers
                    )
                    try:
                        while True:
                            batch = json.loads(await ws.get_message())
                            tagged = []
                            for event in batch:
                                if event.get("type") == "hello":
                                    if not greeted:
                                        greeted = True
                                        feed.hello(index, event)
                                        continue
                                    event = {**event, "type": "process_hello"}
                                tagged.append({**event, "process": index})
                            if tagged:
                                feed.put(tagged)
                    finally:
                        await ws.aclose()
            except (ConnectionClosed, HandshakeError, OSError):
                pass  # the child went away: follow its successor
            await trio.sleep(_RECONNECT)


class _Feed:
    """One ``/events`` client of the parent: the children's hellos, then their events."""

    def __init__(self, count: int, buffer: int = 1024) -> None:
        self.count = count
        self.hellos: dict[int, dict[str, Any]] = {}
        self._absent: set[int] = set()
        self.greeted = trio.Event()
        self._send, self.receive = trio.open_memory_channel[list[dict[str, Any]]](buffer)
        self.scope: trio.CancelScope | None = None
        self.dropped = False

    def _check(self) -> None:
        if len(self.hellos) + len(self._absent - set(self.hellos)) >= self.count:
            self.greeted.set()

    def hello(self, index: int, event: dict[str, Any]) -> None:
        self.hellos[index] = event
        self._check()

    def absent(self, index: int) -> None:
        self._absent.add(index)
        self._check()

    def put(self, batch: list[dict[str, Any]]) -> None:
        """Queue a batch; a client that lets ``buffer`` batches pile up is dropped."""
        try:
            self._send.send_nowait(batch)
        except trio.WouldBlock:
            self.dropped = True
            if self.scope is not None:
                self.scope.cancel(reason="events client too slow")


def _redacted(body: dict[str, Any], members: list[Member]) -> dict[str, Any]:
    texts: set[str] = set()
    for member in members:
        for worker in (member.report or {}).get("workers", {}).values():
            texts.update(t for t in (worker.get("last_error"), worker.get("broker_error")) if t)
    broker = body.get("checks", {}).get("broker", {})
    if broker.get("status") != "healthy" and broker.get("detail"):
        texts.add(broker["detail"])
    out = redact(body, texts)
    processes = {}
    for index, process in body["processes"].items():
        processes[index] = {**process, **redact({"workers": process["workers"]}, texts)}
    out["processes"] = processes
    return out


async def _until_disconnect(receive: Receive, scope: trio.CancelScope) -> None:
    while (await receive())["type"] != "websocket.disconnect":
        pass
    scope.cancel(reason="events client left")


async def _send_json(send: Send, messages: list[dict[str, Any]]) -> None:
    await send({"type": "websocket.send", "text": json.dumps(messages, default=str)})


async def _respond(send: Send, status: int, body: bytes, content_type: str, method: str) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


async def serve_fleet_http(
    asgi: FleetApp,
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``asgi`` on ``host:port`` until cancelled; ``started`` gets the bound port.

    Raises:
        OSError: the address cannot be bound.
    """
    from hypercorn.config import Config, Sockets
    from hypercorn.trio.run import worker_serve
    from hypercorn.utils import wrap_app

    from ._http import _listening_socket

    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 1.0
    config.loglevel = "WARNING"
    config.accesslog = None
    sock = _listening_socket(host, port, reuse_port=False)
    sockets = Sockets(secure_sockets=[], insecure_sockets=[sock], quic_sockets=[])
    with sock:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                functools.partial(
                    worker_serve,
                    # hypercorn types ASGI apps with TypedDict scopes; ours reads plain mappings.
                    wrap_app(asgi, config.wsgi_max_body_size, "asgi"),  # type: ignore[arg-type]
                    config,
                    sockets=sockets,
                )
            )
            task_status.started(sock.getsockname()[1])
