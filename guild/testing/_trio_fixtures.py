"""The plugin's fixtures proper, registered only where pytest-trio runs them."""

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
