"""coredis connection pools that keep their slots when a connection dies in use.

coredis (6.9, its newest release) gives a connection back to its pool on
release only while it is usable, and puts an empty slot back for a dead
connection only when it died idle in the pool. A connection that dies while a
command holds it (a blocking ``XREAD`` or ``BLPOP`` when Redis restarts or a
network cuts the connection) loses its slot for good; after ``max_connections``
such deaths every call waits forever for a slot, and a worker that reconnects
still cannot claim. These pools put an empty slot back instead, so the next
caller opens a fresh connection.

They subclass coredis's pools and override only ``release``, a public method.
coredis has no public way to give a slot back, so the override puts ``None``
(an empty slot, as coredis's own connect-failure path does) on the slot queue
that ``get_connection`` takes from: ``_available_connections`` for one server,
``_node_pool(location)`` for a cluster node. Those are the only coredis
insides touched. A coredis without them fails as the pool is built, with a
``BrokerError`` naming its version, rather than at the first lost connection.
The same change inside coredis's ``release`` makes this module unnecessary;
docs/brokers.md ("Why coredis") has the measurements behind staying on coredis.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import coredis
import coredis.pool
from coredis.connection import TCPLocation

from .._errors import BrokerError


def _require(pool: object, name: str) -> None:
    if not hasattr(pool, name):
        raise BrokerError(
            f"coredis {coredis.__version__} has no connection-pool attribute {name!r};"
            " guild's slot-keeping pools (guild/brokers/_redis_pool.py) need coredis 6.9"
        )


def _release(pool: Any, connection: Any, base: Any, free_slot: Any) -> None:
    if connection.usable:
        base.release(pool, connection)
        return
    pool.statistics.connection_released(connection)
    connection.invalidate()
    free_slot()


class SlotKeepingPool(coredis.pool.ConnectionPool):  # type: ignore[type-arg]
    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        _require(self, "_available_connections")

    def release(self, connection: Any) -> None:
        _release(
            self,
            connection,
            coredis.pool.ConnectionPool,
            lambda: self._available_connections.put_nowait(None),
        )


class SlotKeepingClusterPool(coredis.pool.ClusterConnectionPool):
    def __init__(self, *args: Any, **options: Any) -> None:
        super().__init__(*args, **options)
        _require(self, "_node_pool")

    def release(self, connection: Any) -> None:
        def free_slot() -> None:
            slots = self._node_pool(connection.location)
            if not slots.full():  # a full queue has no slot missing, as coredis's own release
                slots.put_nowait(None)

        _release(self, connection, coredis.pool.ClusterConnectionPool, free_slot)


def single_client(url: str, *, reply_timeout: float | None = None) -> coredis.Redis[Any]:
    """A ``coredis.Redis`` on the one Redis ``url`` names, on a slot-keeping pool.

    ``reply_timeout``: the seconds any reply may take (coredis's ``stream_timeout``),
    blocking commands included; ``None`` waits as long as Redis takes.
    """
    # decode_components: a user or password is percent-encoded in a URL (``%40``
    # for ``@``), as the lean connections (_redis_wire) read it too.
    pool = SlotKeepingPool.from_url(url, decode_components=True, stream_timeout=reply_timeout)
    return coredis.Redis(connection_pool=pool)


def cluster_client(url: str) -> coredis.RedisCluster[Any]:
    """A ``coredis.RedisCluster`` bootstrapped from the one node ``url`` names."""
    parts = urlsplit(url)
    # The startup node is given as a TCPLocation: left to parse it from the URL,
    # coredis builds a deprecated ``Node`` dict and warns.
    startup = TCPLocation(host=parts.hostname or "localhost", port=parts.port or 6379)
    # Every key of one prefix lives on one node, so let each node's pool grow to
    # the whole connection budget (each blocked reader holds a connection).
    pool = SlotKeepingClusterPool.from_url(
        url, startup_nodes=[startup], max_connections_per_node=True, decode_components=True
    )
    return coredis.RedisCluster(connection_pool=pool)
