"""What a broker's ``enqueue`` reads of canary rollouts (see ``guild.rollout``).

Kept apart from ``guild.rollout`` so the brokers import no controller: only the
routing rule (:func:`guild.rollout._lanes.route_jobs`) and the way each backend
reads its shares.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .._job import Job
from ..rollout._lanes import route_jobs

if TYPE_CHECKING:
    # Only named in annotations: the Redis broker imports this module, and a run
    # on Redis does not load sqlite3 at start-up.
    import sqlite3

SHARE_CACHE_SECONDS = 1.0
"""How stale a Redis producer's view of the shares may be: a rollback reaches every
producer within this, and the controller sweeps the lane for longer than that."""


def sqlite_route(db: sqlite3.Connection, jobs: Sequence[Job]) -> Sequence[Job]:
    """SQLite's enqueue, inside its transaction: ``jobs`` routed by the stored shares."""
    shares = {
        str(queue): float(share)
        for queue, share in db.execute("SELECT queue, share FROM rollouts WHERE share > 0")
    }
    return route_jobs(jobs, shares)


def redis_shares_key(prefix: str) -> str:
    """Hash: queue -> its canary's share, for queues with a share above 0."""
    return f"{prefix}:canary:shares"


class RedisShares:
    """One Redis broker's view of the shares, read again at most once a second.

    A round trip per enqueue would double a single enqueue's cost; a second of
    staleness is what the rollback's "within seconds" allows.
    """

    def __init__(self) -> None:
        self._read_at = -float("inf")
        self._shares: dict[str, float] = {}

    def forget(self) -> None:
        """Read again at the next enqueue (this process changed a share)."""
        self._read_at = -float("inf")

    async def route(self, client: Any, prefix: str, jobs: Sequence[Job]) -> Sequence[Job]:
        """``jobs`` routed by the shares, read with ``client.hgetall`` (coredis's
        client, or the broker's lean ``WireCommands``) when a second old."""
        now = time.monotonic()
        if now - self._read_at >= SHARE_CACHE_SECONDS:
            # Here, not at the top: guild run imports this module whatever the
            # broker, and only Redis should pay for loading its modules.
            from ._redis_errors import map_redis_exceptions

            with map_redis_exceptions("canary shares"):
                found = await client.hgetall(redis_shares_key(prefix))
            self._shares = {_text(k): float(_text(v)) for k, v in found.items()}
            self._read_at = now
        return route_jobs(jobs, self._shares)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
