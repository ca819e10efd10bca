"""guild's pytest plugin (entry point ``pytest11``): fixtures for testing workers.

(``autojump_clock`` comes from pytest-trio itself: ask for it and virtual time
jumps whenever every task is blocked, so retries, backoff and leases that take
minutes run in milliseconds; the memory broker follows it.)

* ``memory_broker`` — a fresh :class:`guild.MemoryBroker`, closed afterwards.
* ``run_app`` — ``await run_app(app, broker)`` starts an app in the test's
  nursery and returns once every worker is claiming; it is drained when the
  test ends.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
import trio

from .._app import Guild
from ..brokers._protocol import Broker
from ..brokers.memory import MemoryBroker

RunApp = Callable[[Guild, Broker], Awaitable[Guild]]


@pytest.fixture
async def memory_broker() -> AsyncIterator[MemoryBroker]:
    """A fresh in-memory broker."""
    broker = MemoryBroker()
    try:
        yield broker
    finally:
        await broker.aclose()


@pytest.fixture
async def run_app(nursery: trio.Nursery) -> AsyncIterator[RunApp]:
    """Start apps in the test's nursery; each is drained when the test ends."""
    stops: list[trio.Event] = []

    async def start(app: Guild, broker: Broker) -> Guild:
        stop = trio.Event()
        stops.append(stop)
        await nursery.start(functools.partial(app.run, broker, shutdown_trigger=stop.wait))
        return app

    try:
        yield start
    finally:
        for stop in stops:
            stop.set()
