"""Brokers for the workflow tests: the memory broker, a SQLite file, a private
redis-server and a private Redis Cluster, each real (``tests/_brokers.py``; see
tests/conftest.py for the clock rules)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from guild.brokers import Broker
from tests._brokers import BROKER_KINDS, broker_of
from tests._brokers import redis_cluster as redis_cluster
from tests._brokers import redis_server as redis_server


@pytest.fixture(params=BROKER_KINDS)
async def broker(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Broker]:
    async with broker_of(request.param, request, tmp_path) as opened:
        yield opened
