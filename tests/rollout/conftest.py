"""Brokers for the rollout tests: memory, a real SQLite file, a real redis-server
and a real Redis Cluster (``tests/_brokers.py``)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from tests._brokers import BROKER_KINDS, broker_of
from tests._brokers import redis_cluster as redis_cluster
from tests._brokers import redis_server as redis_server


@pytest.fixture(params=BROKER_KINDS)
def make_broker(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AbstractAsyncContextManager[Any]]:
    kind = request.param
    return lambda: broker_of(kind, request, tmp_path)
