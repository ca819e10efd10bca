"""Fixtures for the observability tests.

Servers listen on 127.0.0.1 port 0; real-clock tests sit under an absolute
``trio.fail_after``. Events are emitted straight into the instruments where the
test is about an instrument, and come from a real worker where it is about the
runtime.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
import trio.testing

import guild
from guild import Job, MemoryBroker
from guild.observability import Observability, observe, serve_http


@pytest.fixture
def autojump_clock() -> trio.testing.MockClock:
    """Virtual time that jumps ahead whenever every task is blocked."""
    return trio.testing.MockClock(autojump_threshold=0)


@attrs.frozen
class Served:
    app: guild.Guild
    broker: MemoryBroker
    port: int
    observability: Observability

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def served(nursery: trio.Nursery) -> AsyncIterator[Served]:
    """An app (not running: events come from the test) observed over real HTTP."""
    broker = MemoryBroker()
    app = guild.Guild("shop", broker=broker)

    @app.worker("emails", concurrency=4)
    async def send(job: Job) -> None:
        return None

    observability = observe(app, buffer=64, logs=False)
    port = await nursery.start(functools.partial(serve_http, app, port=0))
    yield Served(app=app, broker=broker, port=port, observability=observability)
    await broker.aclose()
