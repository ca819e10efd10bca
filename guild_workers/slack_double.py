"""A Slack-compatible HTTP server for tests and demos: the Web API's
``chat.postMessage`` and incoming webhooks, answering as Slack does.

It records every request with the time it arrived, so a test can check what
was posted, in what order and how fast; and it can be told to answer badly:
a burst of ``429`` with ``Retry-After`` on a channel, or a few ``5xx``. Text
over ``text_limit`` characters is refused as Slack refuses it
(``msg_too_long``), so a client that does not split would be caught.

Serve it with hypercorn's Trio server::

    double = SlackDouble(token="xoxb-test")
    async with trio.open_nursery() as nursery:
        base = await double.serve(nursery)      # "http://127.0.0.1:PORT"
        # Web API at f"{base}/api", webhooks at f"{base}/hooks/<name>"
"""

from __future__ import annotations

import functools
import itertools
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@attrs.frozen
class Received:
    """One request as the server saw it.

    Attributes:
        channel: the channel (``hook:<name>`` for a webhook).
        text: the message text.
        thread_ts: the thread it was posted in (Web API), or ``None``.
        at: when it arrived (``time.time()``).
        status: the HTTP status answered.
        ts: the new message's timestamp when it was posted, else ``""``.
        held_until: the end of the ``Retry-After`` the channel was under when
            the request came (0.0 if none): a request with ``at < held_until``
            ignored a 429.
    """

    channel: str
    text: str
    thread_ts: str | None
    at: float
    status: int
    ts: str
    held_until: float


@attrs.define
class _Script:
    """Bad answers queued for a channel: (status, retry_after) each."""

    answers: list[tuple[int, float]] = attrs.Factory(list)


class SlackDouble:
    """The ASGI app. Configure what it refuses, then :meth:`serve` it.

    Args:
        token: the bot token the Web API requires (``Authorization: Bearer …``).
        text_limit: characters of ``text`` accepted.
        unknown_channels: channels that answer ``channel_not_found`` (Web API)
            or ``404`` (webhooks).
    """

    def __init__(
        self,
        *,
        token: str = "xoxb-test",
        text_limit: int = 40_000,
        unknown_channels: frozenset[str] = frozenset(),
    ) -> None:
        self.token = token
        self.text_limit = text_limit
        self.unknown_channels = unknown_channels
        self.received: list[Received] = []
        self._scripts: dict[str, _Script] = {}
        self._holds: dict[str, float] = {}
        self._ts = itertools.count(1)
        self._every: dict[str, tuple[int, int, float]] = {}
        self._counts: dict[str, int] = {}

    # --- scripting ---------------------------------------------------------------

    def answer_next(
        self, channel: str, status: int, *, times: int = 1, retry_after: float = 1.0
    ) -> None:
        """Answer the next ``times`` requests on ``channel`` with ``status`` (a 429
        carries ``Retry-After: retry_after`` and holds the channel that long)."""
        self._scripts.setdefault(channel, _Script()).answers.extend([(status, retry_after)] * times)

    def rate_limit_every(self, channel: str, every: int, burst: int, retry_after: float) -> None:
        """From now on, after every ``every`` requests on ``channel`` answered 200,
        answer the next ``burst`` requests with ``429`` and ``Retry-After``."""
        self._every[channel] = (every, burst, retry_after)

    # --- reading -----------------------------------------------------------------

    def posted(self, channel: str | None = None) -> list[Received]:
        """The requests that posted a message (status 200, accepted), in order."""
        return [r for r in self.received if r.ts and (channel is None or r.channel == channel)]

    # --- serving -----------------------------------------------------------------

    async def serve(self, nursery: trio.Nursery, host: str = "127.0.0.1") -> str:
        """Serve on a free port in ``nursery``; returns the base URL."""
        # Imported here: hypercorn is slow to import and only serving needs it.
        from hypercorn.config import Config
        from hypercorn.trio import serve

        config = Config()
        config.bind = [f"{host}:0"]
        # Slack keeps idle connections well past hypercorn's 5 s default; a
        # server closing one as a client reuses it loses that request's answer.
        config.keep_alive_timeout = 75.0
        config.accesslog = None
        config.errorlog = None
        bound: list[str] = await nursery.start(functools.partial(serve, self, config))  # type: ignore[arg-type]
        return bound[0]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        at = time.time()
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        if scope["method"] != "POST":
            await _answer(send, 405, "text/plain", "method not allowed")
        elif path == "/api/chat.postMessage":
            await self._post_message(send, headers, body, at)
        elif path.startswith("/hooks/") and len(path) > len("/hooks/"):
            await self._webhook(send, path[len("/hooks/") :], body, at)
        else:
            await _answer(send, 404, "text/plain", "no such endpoint")

    async def _post_message(
        self, send: Send, headers: dict[str, str], body: bytes, at: float
    ) -> None:
        if headers.get("authorization") != f"Bearer {self.token}":
            await _answer(send, 200, "application/json", _json(ok=False, error="invalid_auth"))
            return
        try:
            request = json.loads(body)
            channel, text = request["channel"], request["text"]
            assert isinstance(channel, str) and isinstance(text, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            await _answer(send, 200, "application/json", _json(ok=False, error="invalid_arguments"))
            return
        thread_ts = request.get("thread_ts")
        held = self._held(channel, at)
        status, extra = self._verdict(channel, at)
        error: str | None = None
        if status == 200:
            if channel in self.unknown_channels:
                error = "channel_not_found"
            elif len(text) > self.text_limit:
                error = "msg_too_long"
        ts = f"{int(at)}.{next(self._ts):06d}" if status == 200 and error is None else ""
        self._record(Received(channel, text, thread_ts, at, status, ts, held))
        if status != 200:
            await _answer(send, status, "application/json", _json(ok=False, error="x"), extra)
        elif error is not None:
            await _answer(send, 200, "application/json", _json(ok=False, error=error))
        else:
            await _answer(send, 200, "application/json", _json(ok=True, channel=channel, ts=ts))

    async def _webhook(self, send: Send, name: str, body: bytes, at: float) -> None:
        channel = f"hook:{name}"
        try:
            request = json.loads(body)
            text = request["text"]
            assert isinstance(text, str)
        except (ValueError, KeyError, TypeError, AssertionError):
            await _answer(send, 400, "text/plain", "invalid_payload")
            return
        held = self._held(channel, at)
        status, extra = self._verdict(channel, at)
        if status == 200 and name in self.unknown_channels:
            status, reason = 404, "channel_not_found"
        elif status == 200 and len(text) > self.text_limit:
            status, reason = 400, "msg_too_long"
        else:
            reason = "ok" if status == 200 else "rate_limited" if status == 429 else "error"
        ts = f"{int(at)}.{next(self._ts):06d}" if status == 200 else ""
        self._record(Received(channel, text, None, at, status, ts, held))
        await _answer(send, status, "text/plain", reason, extra)

    def _held(self, channel: str, at: float) -> float:
        held = self._holds.get(channel, 0.0)
        return held if at < held else 0.0

    def _verdict(self, channel: str, at: float) -> tuple[int, list[tuple[bytes, bytes]]]:
        script = self._scripts.get(channel)
        if script is not None and script.answers:
            status, wait = script.answers.pop(0)
        elif channel in self._every and self._due(channel):
            status, wait = 429, self._every[channel][2]
        else:
            self._counts[channel] = self._counts.get(channel, 0) + 1
            return 200, []
        extra: list[tuple[bytes, bytes]] = []
        if status == 429:
            extra = [(b"retry-after", f"{wait:g}".encode())]
            self._holds[channel] = max(self._holds.get(channel, 0.0), at + wait)
        return status, extra

    def _due(self, channel: str) -> bool:
        every, burst, _ = self._every[channel]
        count = self._counts.get(channel, 0)
        if count and count % every == 0:
            # Owed a burst of refusals; each one counts down the burst.
            owed = self._counts.setdefault(f"{channel}\0owed", burst)
            if owed > 0:
                self._counts[f"{channel}\0owed"] = owed - 1
                return True
            del self._counts[f"{channel}\0owed"]
        return False

    def _record(self, received: Received) -> None:
        self.received.append(received)


def _json(**fields: Any) -> str:
    return json.dumps(fields)


async def _answer(
    send: Send,
    status: int,
    content_type: str,
    body: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [(b"content-type", content_type.encode()), *(extra or [])]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body.encode()})
