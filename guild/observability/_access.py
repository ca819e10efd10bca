"""Who may use the dashboard, ``/events`` and the HTTP actions: a pure policy.

The HTTP shell turns a request into an :class:`Asked` and acts on the
:class:`Verdict` of :func:`judge`; nothing here does I/O, so the rules are
tested on their own.

Rules:

* **Loopback needs no login.** A server bound to a loopback address (127.0.0.0/8,
  ``::1``, ``localhost``) admits every request whose ``Host`` names loopback
  too. The ``Host`` check stops DNS rebinding: a page on ``evil.example`` whose
  name is made to resolve to 127.0.0.1 is same-origin to the browser, but its
  requests carry ``Host: evil.example``.
* **Any other address needs the token.** It is accepted as
  ``Authorization: Bearer TOKEN`` (scripts), as ``?token=TOKEN`` on ``GET /``
  (which answers a session cookie and a redirect to ``/`` that drops it from the
  address bar and history), or as that session cookie. The cookie holds a nonce
  and the HMAC of the nonce under the token, so every process of a
  ``guild run --processes N`` (which share one port) accepts the sessions of
  the others, and changing the token ends every session. Without a token
  configured, a non-loopback server refuses the dashboard, ``/events`` and the
  actions (``/health`` and ``/metrics`` stay open, for probes and scrapers).
* **Actions are POSTs that a cross-site page cannot make** (double-submit
  cookie): each carries the header ``X-Guild-CSRF`` equal to the ``guild_csrf``
  cookie the dashboard page set. Another site can neither read that cookie nor
  add a custom header to a cross-origin request without a CORS preflight, which
  this server never grants; both cookies are ``SameSite=Strict`` besides. A
  request whose ``Origin`` (or ``Sec-Fetch-Site``) says it came from another
  site is refused before anything else. A POST with a valid bearer token needs
  no CSRF header: a browser never adds an ``Authorization`` header on its own.
* **Websockets** are not covered by CORS, so ``/events`` also refuses an
  ``Origin`` that is not the server's own.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Mapping

import attrs

SESSION_COOKIE = "guild_session"
CSRF_COOKIE = "guild_csrf"
CSRF_HEADER = "x-guild-csrf"
TOKEN_VARIABLE = "GUILD_HTTP_TOKEN"
REDACT_VARIABLE = "GUILD_HTTP_REDACT"


def token_fault(token: str) -> str | None:
    """Why ``token`` cannot be the HTTP token, or None if it can.

    It travels in an ``Authorization`` header and a cookie, where a control
    character (a newline pasted with it) cannot go: a server would start that no
    client could ever log in to.
    """
    if not token or token != token.strip():
        return "a token, not empty, with no surrounding spaces"
    if not token.isprintable():
        return "a token without control or line-breaking characters (it travels in an HTTP header)"
    return None


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address or a ``Host`` name, without port) is loopback."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name part of a ``Host`` header: ``[::1]:8000`` is ``::1``, ``a:80`` is ``a``."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    if header.count(":") == 1:
        return header.partition(":")[0]
    return header


class Kind(enum.Enum):
    """What a request is, for :func:`judge`."""

    PAGE = "page"
    """The dashboard page, its assets, and its JSON reads."""
    EVENTS = "events"
    """The ``/events`` websocket."""
    ACTION = "action"
    """A POST that changes something."""


@attrs.frozen(kw_only=True)
class Access:
    """The server's side of the rules.

    Attributes:
        token: the shared secret (``None``: none configured).
        loopback: the server is bound to a loopback address.
    """

    token: str | None
    loopback: bool

    def __attrs_post_init__(self) -> None:
        fault = None if self.token is None else token_fault(self.token)
        if fault is not None:
            raise ValueError(f"the HTTP token: expected {fault}, got {self.token!r}")

    @property
    def login(self) -> bool:
        """Whether the dashboard needs the token."""
        return not self.loopback


@attrs.frozen(kw_only=True)
class Asked:
    """The parts of a request the rules read (header names in lower case)."""

    kind: Kind
    scheme: str
    headers: Mapping[str, str]
    cookies: Mapping[str, str]
    query_token: str | None = None


@attrs.frozen
class Admit:
    """Go ahead."""


@attrs.frozen
class StartSession:
    """The token came in the query: set this session cookie and redirect to ``/``."""

    cookie: str


@attrs.frozen
class Refuse:
    """Answer ``status`` with ``reason``."""

    status: int
    reason: str


Verdict = Admit | StartSession | Refuse


def session_value(token: str, nonce: str | None = None) -> str:
    """A session cookie's value: a nonce and its HMAC under ``token``."""
    nonce = nonce or secrets.token_hex(16)
    return f"{nonce}.{_mac(token, nonce)}"


def _mac(token: str, nonce: str) -> str:
    message = f"session:{nonce}".encode("utf-8", "surrogatepass")
    return hmac.new(token.encode(), message, hashlib.sha256).hexdigest()


def valid_session(token: str, value: str) -> bool:
    nonce, sep, mac = value.partition(".")
    # As bytes: compare_digest refuses str with non-ASCII characters (TypeError),
    # and a cookie is whatever the client sent.
    given = mac.encode("utf-8", "surrogatepass")
    return bool(sep and nonce) and hmac.compare_digest(given, _mac(token, nonce).encode())


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _bearer(headers: Mapping[str, str]) -> str | None:
    scheme, _, value = headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def _cross_site(asked: Asked) -> str | None:
    """Why the request comes from another site, or ``None``."""
    site = asked.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site is {site}"
    origin = asked.headers.get("origin")
    if origin is not None:
        # Host and port only: behind a proxy that ends TLS, the page is https and
        # this server sees http; the proxy must pass the Host header on.
        host = asked.headers.get("host", "")
        if origin.partition("://")[2].lower() != host.lower():
            return f"Origin {origin} is not this server ({host or 'no Host'})"
    return None


def judge(access: Access, asked: Asked) -> Verdict:
    """Admit, start a session, or refuse ``asked`` under the rules of the module."""
    host = host_name(asked.headers.get("host", ""))
    if access.loopback and not is_loopback(host):
        return Refuse(403, f"Host {host or '(none)'} does not name loopback (DNS rebinding?)")
    if asked.kind is not Kind.PAGE:
        why = _cross_site(asked)
        if why is not None:
            return Refuse(403, f"cross-site request refused: {why}")
    bearer = False
    if access.login:
        token = access.token
        if token is None:
            return Refuse(
                403,
                "this server listens on a non-loopback address and has no token: set "
                f"${TOKEN_VARIABLE} (or http_token in guild.toml) to use the dashboard",
            )
        bearer = _same(_bearer(asked.headers), token)
        session = asked.cookies.get(SESSION_COOKIE)
        if not bearer and not (session is not None and valid_session(token, session)):
            if asked.kind is Kind.PAGE and _same(asked.query_token, token):
                return StartSession(session_value(token))
            return Refuse(401, "a valid token is needed (Authorization: Bearer, or /?token=)")
    if asked.kind is Kind.ACTION and not bearer:
        cookie = asked.cookies.get(CSRF_COOKIE)
        if not cookie or not _same(asked.headers.get(CSRF_HEADER), cookie):
            return Refuse(403, f"the {CSRF_HEADER} header must equal the {CSRF_COOKIE} cookie")
    return Admit()


def parse_cookies(header: str) -> dict[str, str]:
    """``a=1; b=2`` into a dict (the first of a repeated name wins)."""
    cookies: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name and name not in cookies:
            cookies[name] = value.strip('"')
    return cookies


def redact(body: Mapping[str, object], secrets_: set[str]) -> dict[str, object]:
    """A ``/health`` body with exception messages replaced by ``"redacted"``.

    ``secrets_`` are the messages to hide (workers' last errors, broker errors):
    the workers' ``last_error`` and ``broker_error``, the queues' ``broken`` (why
    a queue's counts could not be read: it names a key) and the schedules'
    ``error`` (``periodic``) are replaced wherever set, and so is every check
    ``detail`` that holds one of them or a queue's ``broken``.
    """
    out = dict(body)
    secrets_ = set(secrets_)
    workers = body.get("workers")
    if isinstance(workers, Mapping):
        out["workers"] = {
            name: {
                key: ("redacted" if key in ("last_error", "broker_error") and value else value)
                for key, value in worker.items()
            }
            for name, worker in workers.items()
            if isinstance(worker, Mapping)
        }
    queues = body.get("queues")
    if isinstance(queues, Mapping):
        secrets_.update(
            q["broken"] for q in queues.values() if isinstance(q, Mapping) and q.get("broken")
        )
        out["queues"] = {
            name: {**q, "broken": "redacted"} if isinstance(q, Mapping) and q.get("broken") else q
            for name, q in queues.items()
        }
    periodic = body.get("periodic")
    if isinstance(periodic, list):
        out["periodic"] = [
            {**p, "error": "redacted"} if isinstance(p, Mapping) and p.get("error") else p
            for p in periodic
        ]
    checks = body.get("checks")
    if isinstance(checks, Mapping):
        out["checks"] = {
            name: {
                key: (
                    "redacted"
                    if key == "detail"
                    and isinstance(value, str)
                    and any(s and s in value for s in secrets_)
                    else value
                )
                for key, value in check.items()
            }
            for name, check in checks.items()
            if isinstance(check, Mapping)
        }
    return out
