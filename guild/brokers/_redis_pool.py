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


class SlotKeepingPool(coredis.pool.ConnectionPool):  # type: ignore[type-arg]
    def release(self, connection: Any) -> None:
        if connection.usable:
            super().release(connection)
            return
        self.statistics.connection_released(connection)
        connection.invalidate()
        self._available_connections.put_nowait(None)


class SlotKeepingClusterPool(coredis.pool.ClusterConnectionPool):
    def release(self, connection: Any) -> None:
        if connection.usable:
            super().release(connection)
            return
        self.statistics.connection_released(connection)
        connection.invalidate()
        with contextlib.suppress(QueueFull):  # as coredis's own release
            self._node_pool(connection.location).put_nowait(None)
