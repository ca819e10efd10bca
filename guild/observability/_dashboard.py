"""The dashboard at ``/``: its page, its JSON state, its actions, and what it remembers.

Routes (served by :class:`~guild.observability._http.ObservabilityApp`, under
the rules of :mod:`._access`):

* ``GET /``: the page (``dashboard/index.html``); ``/dashboard/app.js`` and
  ``/dashboard/app.css`` are its script and style. Every asset ships in the
  package: the machines it runs on may have no internet.
* ``GET /api/state``: everything the page shows, as JSON; the page reads it
  once, then follows ``/events`` and reads it again now and then for the
  broker's counts, which no event carries.
* ``POST /api/dead/requeue`` ``{"ids": [...]}``: requeue dead letters
  (``{"requeued": n}``).
* ``POST /api/jobs/cancel`` ``{"ids": [...]}``: cancel jobs
  (``{"cancelled": [...]}``).

Running jobs come from the app's workers (``Guild.running_jobs``). Recent
failures and the last progress of each running job are in no count, so the
:class:`Tracker` keeps them, from the app's ``job_finished`` events (which its
metrics already take) and ``job_progress`` events (written at most four times a
second per job), while the HTTP server runs.
"""

from __future__ import annotations

import collections
import functools
import json
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Collection, Mapping
from importlib import resources
from typing import TYPE_CHECKING, Any

import attrs
import trio

from .._errors import BrokerError, GuildError
from .._job import Job
from ..brokers._protocol import Broker
from ..brokers._workflow_store import WorkflowRecord, WorkflowStore
from ._access import (
    CSRF_COOKIE,
    SESSION_COOKIE,
    Access,
    Asked,
    Kind,
    Refuse,
    StartSession,
    judge,
    parse_cookies,
)
from ._events import Instrument, JobFinished, Outcome
from ._feature_events import JobProgressed

if TYPE_CHECKING:
    from ._http import ObservabilityApp

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/dashboard/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/dashboard/app.css": ("app.css", "text/css; charset=utf-8"),
}
"""Path to (file in ``guild/observability/dashboard/``, content type)."""

MAX_IDS = 1000
"""Ids one action may name."""

_FAILED = (Outcome.RETRY, Outcome.DEAD)


def asset(name: str) -> bytes:
    """One of the dashboard's files, read from the installed package."""
    return (resources.files("guild.observability") / "dashboard" / name).read_bytes()


class Tracker(Instrument):
    """Remembers the last ``failures`` failed runs, and the last progress of each
    running job that reported one.

    It listens to ``job_finished`` and ``job_progress`` only: a ``job_started``
    listener would make every worker build an event per job that nothing else
    wants while nobody watches ``/events``.

    Args:
        failures: failed runs kept (retried or dead-lettered), newest last.
        clock: wall-clock time (``time.time``): the page shows ages from it.
    """

    def __init__(self, *, failures: int = 50, clock: Callable[[], float] = time.time) -> None:
        if failures < 1:
            raise ValueError(f"failures must be at least 1, got {failures}")
        self._clock = clock
        self._progress: dict[str, dict[str, Any]] = {}
        self._failures: collections.deque[dict[str, Any]] = collections.deque(maxlen=failures)

    def job_progress(self, event: JobProgressed) -> None:
        self._progress[event.job.id] = {"fraction": event.fraction, "message": event.message}

    def progress(self, running: Collection[str]) -> dict[str, dict[str, Any]]:
        """The last progress of the ``running`` jobs; forgets that of any other job
        (one handed back at shutdown ends with no ``job_finished``)."""
        for job_id in [i for i in self._progress if i not in running]:
            del self._progress[job_id]
        return dict(self._progress)

    def job_finished(self, event: JobFinished) -> None:
        job = event.job
        self._progress.pop(job.id, None)
        if event.outcome in _FAILED:
            self._failures.append(
                {
                    "id": job.id,
                    "worker": event.worker,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "outcome": event.outcome.value,
                    "error": event.error,
                    "time": self._clock(),
                }
            )

    def failures(self) -> list[dict[str, Any]]:
        """The last failed runs, newest first."""
        return list(reversed(self._failures))


def running(
    jobs: Mapping[str, list[tuple[Job, float]]], now: float, tracker: Tracker
) -> list[dict[str, Any]]:
    """The jobs running now, oldest first, each with its start in wall-clock time
    and its last progress (``None`` when it reported none)."""
    progress = tracker.progress({job.id for held in jobs.values() for job, _ in held})
    rows = [
        {
            "id": job.id,
            "worker": worker,
            "queue": job.queue,
            "attempt": job.attempt,
            "started": now - seconds,
            "progress": progress.get(job.id),
        }
        for worker, held in jobs.items()
        for job, seconds in held
    ]
    return sorted(rows, key=lambda row: (row["started"], row["id"]))


def circuit(state: str) -> str:
    """The circuit a worker state implies: ``open``, ``half_open`` or ``closed``."""
    return state if state in ("open", "half_open") else "closed"


class ActionError(Exception):
    """An action's body is not what it must be; the message says what is wrong."""


def action_ids(body: bytes) -> list[str]:
    """The ``ids`` of an action's JSON body ``{"ids": ["…", …]}``.

    Raises:
        ActionError: not JSON, not an object, no ``ids``, ids not non-empty
            strings, or more than :data:`MAX_IDS`.
    """
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise ActionError(f"the body must be JSON ({exc})") from None
    if not isinstance(parsed, Mapping) or "ids" not in parsed:
        raise ActionError('the body must be an object {"ids": [...]}')
    ids = parsed["ids"]
    if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
        raise ActionError('"ids" must be a list of non-empty strings')
    if len(ids) > MAX_IDS:
        raise ActionError(f'"ids" may name at most {MAX_IDS} jobs, got {len(ids)}')
    return list(dict.fromkeys(ids))


def dead_json(letter: Any) -> dict[str, Any]:
    """A :class:`~guild.DeadLetter` as the page shows it."""
    job = letter.job
    return {
        "id": job.id,
        "queue": job.queue,
        "attempt": job.attempt,
        "error": letter.error,
        "traceback": letter.traceback,
        "died_at": letter.died_at,
        "payload": json.dumps(job.payload, default=str)[:500],
    }


def workflow_json(record: WorkflowRecord) -> dict[str, Any]:
    """A workflow record's summary for the page: its status, and each step's state."""
    # Imported here: guild.workflows imports the app, which imports this package.
    from ..workflows._view import WorkflowView

    summary: dict[str, Any] = {
        "id": record.id,
        "name": record.name,
        "status": record.status,
        "created_at": record.created_at,
        "updated_at": record.updated_at,
        "steps": None,
        "failed_step": None,
        "error": None,
    }
    try:
        view = WorkflowView.from_record(record)
    except ValueError:
        return summary  # a record no coordinator wrote: its summary only
    summary["steps"] = [{"name": step.name, "state": step.state} for step in view.steps]
    summary["failed_step"] = view.failed_step
    summary["error"] = view.error
    return summary


# --- the HTTP side ----------------------------------------------------------------

_READS = frozenset({*ASSETS, "/api/state"})
_ACTIONS = frozenset({"/api/dead/requeue", "/api/jobs/cancel"})
PATHS = _READS | _ACTIONS
"""Every path the dashboard answers."""

_MAX_BODY = 256 * 1024
_SECURITY_HEADERS = [
    # The page loads only its own script and style, and may be framed by no one.
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
        b" connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


def request_headers(scope: Mapping[str, Any]) -> dict[str, str]:
    """A request's headers, names in lower case (the last of a repeated one wins)."""
    return {
        name.decode("latin-1").lower(): value.decode("latin-1")
        for name, value in scope.get("headers", ())
    }


def asked(scope: Mapping[str, Any], kind: Kind) -> Asked:
    """The parts of an ASGI request that :func:`judge` reads."""
    headers = request_headers(scope)
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    scheme = {"ws": "http", "wss": "https"}.get(scope.get("scheme", "http"), scope.get("scheme"))
    return Asked(
        kind=kind,
        scheme=str(scheme or "http"),
        headers=headers,
        cookies=parse_cookies(headers.get("cookie", "")),
        query_token=tokens[0] if tokens else None,
    )


async def respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str = "application/json",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    """Send a whole response, never cached, with the dashboard's security headers."""
    start = [
        (b"content-type", content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *_SECURITY_HEADERS,
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or ``None`` when it is over :data:`_MAX_BODY`."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _cookie(name: str, value: str, *, secure: bool, http_only: bool) -> tuple[bytes, bytes]:
    attributes = f"{name}={value}; Path=/; SameSite=Strict"
    if http_only:
        attributes += "; HttpOnly"
    if secure:
        attributes += "; Secure"
    return (b"set-cookie", attributes.encode())


@attrs.frozen(kw_only=True)
class Site:
    """What :func:`serve_site` needs from the server that hosts the dashboard.

    Attributes:
        access: who may see the page and act.
        timeout: seconds the broker gets to answer an action.
        state: the body of ``/api/state``.
        broker: the broker actions go through; raises :class:`~guild.GuildError`
            (with the reason) when there is none.
    """

    access: Access
    timeout: float
    state: Callable[[], Awaitable[dict[str, Any]]]
    broker: Callable[[], Broker]


async def serve(
    owner: ObservabilityApp, scope: Mapping[str, Any], receive: Receive, send: Send
) -> None:
    """Answer a request for one of :data:`PATHS` for one process's server."""
    site = Site(
        access=owner.access,
        timeout=owner.broker_timeout,
        state=functools.partial(state, owner),
        broker=lambda: owner.app.broker,
    )
    await serve_site(site, scope, receive, send)


async def serve_site(site: Site, scope: Mapping[str, Any], receive: Receive, send: Send) -> None:
    """Answer a request for one of :data:`PATHS`, under the rules of :mod:`._access`.

    A single process and the parent of ``guild run --processes N`` both answer
    through here, so the rules are the same whatever serves the page.
    """
    path, method = scope["path"], scope["method"]
    action = path in _ACTIONS
    allowed = ("POST",) if action else ("GET", "HEAD")
    if method not in allowed:
        await respond(
            send,
            405,
            _error("method not allowed"),
            method=method,
            headers=[(b"allow", ", ".join(allowed).encode())],
        )
        return
    request = asked(scope, Kind.ACTION if action else Kind.PAGE)
    verdict = judge(site.access, request)
    secure = request.scheme == "https"
    if isinstance(verdict, Refuse):
        await respond(send, verdict.status, _error(verdict.reason), method=method)
        return
    if isinstance(verdict, StartSession):
        # The token leaves the address bar (and the history) at once.
        cookie = _cookie(SESSION_COOKIE, verdict.cookie, secure=secure, http_only=True)
        await respond(
            send, 303, b"", "text/plain", method=method, headers=[cookie, (b"location", b"/")]
        )
        return
    if path in ASSETS:
        name, content_type = ASSETS[path]
        headers = []
        if path == "/" and not request.cookies.get(CSRF_COOKIE):
            # Read by the page's script and sent back as a header with each action.
            value = secrets.token_urlsafe(24)
            headers.append(_cookie(CSRF_COOKIE, value, secure=secure, http_only=False))
        await respond(send, 200, asset(name), content_type, method=method, headers=headers)
        return
    if path == "/api/state":
        body = json.dumps(await site.state(), default=str, separators=(",", ":")).encode()
        await respond(send, 200, body, method=method)
        return
    await _act(site, path, receive, send)


async def _act(site: Site, path: str, receive: Receive, send: Send) -> None:
    raw = await _read_body(receive)
    if raw is None:
        await respond(send, 413, _error(f"the body is over {_MAX_BODY} bytes"), method="POST")
        return
    try:
        ids = action_ids(raw)
        broker = site.broker()
    except ActionError as exc:
        await respond(send, 400, _error(str(exc)), method="POST")
        return
    except GuildError as exc:  # NotRunning
        await respond(send, 503, _error(str(exc)), method="POST")
        return
    try:
        with trio.fail_after(site.timeout):
            if path == "/api/dead/requeue":
                answer: dict[str, Any] = {"requeued": await broker.requeue_dead(ids)}
            else:
                answer = {"cancelled": await broker.cancel(ids)}
    except trio.TooSlowError:
        message = f"the broker did not answer within {site.timeout:g}s"
        await respond(send, 503, _error(message), method="POST")
        return
    except BrokerError as exc:
        await respond(send, 503, _error(f"{type(exc).__name__}: {exc}"), method="POST")
        return
    await respond(send, 200, json.dumps(answer).encode(), method="POST")


async def state(owner: ObservabilityApp) -> dict[str, Any]:
    """Everything the page shows (see the module docstring)."""
    health, now = await owner.health()
    body = health.to_json(now)
    workers = body["workers"]
    concurrency = {name: spec.concurrency for name, spec in owner.app.specs.items()}
    for name, worker in workers.items():
        worker["circuit"] = circuit(worker["state"])
        worker["concurrency"] = concurrency.get(name)
    dead, workflows, broker_now = await _broker_lists(owner)
    return {
        "app": owner.app.name,
        "time": time.time(),
        "broker_time": broker_now,
        "login": owner.access.login,
        "status": body["status"],
        "broker_error": health_broker_error(body),
        "queues": body["queues"],
        "workers": workers,
        "running": running(owner.app.running_jobs(), time.time(), owner.tracker),
        "failures": owner.tracker.failures(),
        "dead": dead,
        "workflows": workflows,
    }


def health_broker_error(body: Mapping[str, Any]) -> str | None:
    """Why the broker is unreachable, from a ``/health`` body's broker check."""
    check = body.get("checks", {}).get("broker", {})
    return check.get("detail") if check.get("value") == "unreachable" else None


async def _broker_lists(
    owner: ObservabilityApp,
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, float | None]:
    try:
        broker = owner.app.broker
    except GuildError:
        return None, None, None
    return await broker_lists(broker, owner.broker_timeout)


async def broker_lists(
    broker: Broker, timeout: float
) -> tuple[list[dict[str, Any]] | None, list[dict[str, Any]] | None, float | None]:
    """Dead letters, workflows (``None`` for a broker without a store) and the broker's now."""
    try:
        with trio.fail_after(timeout):
            dead = [dead_json(letter) for letter in await broker.list_dead(limit=100)]
            workflows = None
            if isinstance(broker, WorkflowStore):
                records = await broker.list_workflows(limit=100)
                workflows = [workflow_json(record) for record in records]
    except (trio.TooSlowError, BrokerError):
        return None, None, None  # the broker check already says it did not answer
    return dead, workflows, broker.now()
