"""coredis connection pools that keep their slots when a connection dies in use.

coredis 6.9 gives a connection back to its pool on release only while it is
usable, and puts an empty slot back for a dead connection only when it died
idle in the pool. A connection that dies while a command holds it (a blocking
``XREAD`` or ``BLPOP`` when Redis restarts or a network cuts the connection)
loses its slot for good; after ``max_connections`` such deaths every call waits
forever for a slot, and a worker that reconnects still cannot claim. These
pools put an empty slot back instead, so the next caller opens a fresh
connection. (They rely on the pools' slot queues, hence the pinned coredis
minor version in pyproject.toml.)
"""

from __future__ import annotations

import contextlib
from typing import Any

import coredis.pool
from coredis._concurrency import QueueFull


def _release(pool: Any, connection: Any, base: Any, free_slot: Any) -> None:
    if connection.usable:
        base.release(pool, connection)
        return
    pool.statistics.connection_released(connection)
    connection.invalidate()
    free_slot()


class SlotKeepingPool(coredis.pool.ConnectionPool):  # type: ignore[type-arg]
    def release(self, connection: Any) -> None:
        _release(
            self,
            connection,
            coredis.pool.ConnectionPool,
            lambda: self._available_connections.put_nowait(None),
        )


class SlotKeepingClusterPool(coredis.pool.ClusterConnectionPool):
    def release(self, connection: Any) -> None:
        def free_slot() -> None:
            with contextlib.suppress(QueueFull):  # as coredis's own release
                self._node_pool(connection.location).put_nowait(None)

        _release(self, connection, coredis.pool.ClusterConnectionPool, free_slot)
