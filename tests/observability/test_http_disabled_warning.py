"""``dashboard_disabled`` is logged once the address is bound, never before.

An address that cannot be served is the one error line of ``guild run``; a
warning about serving it must not come first (tests/cli/test_bad_input.py holds
the CLI to that). Here the server itself: a real socket on every interface, and
a host name that does not resolve.
"""

from __future__ import annotations

import functools
from collections.abc import MutableMapping
from typing import Any

import pytest
import trio
from structlog.testing import capture_logs

import guild
from guild.observability import serve_http


def _disabled(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    return [entry for entry in logs if entry["event"] == "dashboard_disabled"]


async def test_logged_once_bound_off_loopback_without_a_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUILD_HTTP_TOKEN", raising=False)
    app = guild.Guild("warn")
    with trio.fail_after(30), capture_logs() as logs:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(functools.partial(serve_http, app, host="0.0.0.0", port=0))
            assert port > 0
            nursery.cancel_scope.cancel()
    assert [(e["host"], e["log_level"]) for e in _disabled(logs)] == [("0.0.0.0", "warning")]


async def test_not_logged_when_the_address_cannot_be_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GUILD_HTTP_TOKEN", raising=False)
    app = guild.Guild("warn")
    with trio.fail_after(30), capture_logs() as logs, pytest.raises(OSError):
        await serve_http(app, host="no.such.host.invalid", port=8000)
    assert _disabled(logs) == []


async def test_not_logged_with_a_token_or_on_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GUILD_HTTP_TOKEN", raising=False)
    app = guild.Guild("warn")
    with trio.fail_after(30), capture_logs() as logs:
        for host, token in [("0.0.0.0", "s3cret"), ("127.0.0.1", None)]:
            async with trio.open_nursery() as nursery:
                serve = functools.partial(serve_http, app, host=host, port=0, token=token)
                await nursery.start(serve)
                nursery.cancel_scope.cancel()
    assert _disabled(logs) == []
