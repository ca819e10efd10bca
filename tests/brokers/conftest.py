"""Broker factories for the conformance suite: adding a broker is one entry in
``tests/_brokers.py``."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from guild.brokers import Broker
from tests._brokers import BROKER_KINDS, broker_of
from tests._brokers import redis_cluster as redis_cluster
from tests._brokers import redis_server as redis_server

MakeBroker = Callable[[], AbstractAsyncContextManager[Broker]]


@pytest.fixture(params=BROKER_KINDS)
def make_broker(request: pytest.FixtureRequest, tmp_path: Path) -> MakeBroker:
    kind = request.param
    return lambda: broker_of(kind, request, tmp_path)
