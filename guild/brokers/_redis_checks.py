"""What guild checks about the Redis it runs on: durability settings, and lost data.

Pure: the broker reads Redis (``CONFIG GET``, the epoch marker, queue counts)
and these functions judge what it read.

* **Persistence.** A Redis with neither AOF (``appendonly yes``) nor RDB
  snapshots (``save`` not empty) loses every job when it restarts.
* **Eviction.** Under any ``maxmemory-policy`` but ``noeviction``, Redis deletes
  keys to make room when it is full: job hashes, streams, leases.
* **Lost data.** When a queue's consumer group, or the epoch marker guild wrote
  when it connected, is gone, Redis lost data behind guild's back (a restart
  without persistence, a failover to an empty replica, an eviction, a
  ``FLUSHALL``): every job of the queue not yet finished is gone without a trace.
  That stays reported (unhealthy) until acknowledged.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping

import attrs

from .._job import QueueStats
from ._protocol import BrokerIssue

CONFIG_KEYS = ("appendonly", "save", "maxmemory-policy")
"""The settings read with ``CONFIG GET`` (one at a time: Redis 6 takes one pattern)."""


def config_issues(
    config: Mapping[str, str] | None, refusal: str | None = None
) -> list[BrokerIssue]:
    """Judge Redis' durability settings.

    Args:
        config: ``CONFIG GET`` answers by setting name; None when Redis refused
            (the command is disabled or renamed, as on many managed services).
        refusal: why it was refused.
    """
    if config is None:
        return [
            BrokerIssue(
                name="config",
                severity="info",
                detail=f"cannot read Redis' config ({refusal or 'CONFIG GET refused'}):"
                " persistence and eviction policy unknown; check them by hand"
                " (docs/brokers.md, Redis production checklist)",
            )
        ]
    issues = []
    appendonly = config.get("appendonly", "").strip().lower()
    save = config.get("save", "").strip()
    if appendonly != "yes" and not save:
        issues.append(
            BrokerIssue(
                name="persistence",
                severity="degraded",
                detail="Redis has no persistence (appendonly no, save ''): a restart"
                " loses every job; set appendonly yes",
            )
        )
    policy = config.get("maxmemory-policy", "").strip().lower()
    if policy and policy != "noeviction":
        issues.append(
            BrokerIssue(
                name="eviction",
                severity="degraded",
                detail=f"maxmemory-policy is {policy}: when full, Redis deletes keys"
                " (jobs, queues, leases) to make room; set it to noeviction",
            )
        )
    return issues


@attrs.frozen(kw_only=True)
class DataLoss:
    """Redis lost a queue's data behind guild's back.

    Attributes:
        queue: the queue.
        how: how it showed (``its consumer group vanished`` …).
        at: when it was found, in the broker's clock.
        last: the queue's counts when guild last read them (None: never read).
        last_at: when those counts were read.
    """

    queue: str
    how: str
    at: float
    last: QueueStats | None = None
    last_at: float | None = None

    @property
    def lost(self) -> int | None:
        """Jobs the queue held, not finished, when last counted (None: unknown)."""
        if self.last is None:
            return None
        return self.last.ready + self.last.delayed + self.last.in_flight

    def describe(self) -> str:
        when = dt.datetime.fromtimestamp(self.at, dt.UTC).isoformat(timespec="seconds")
        if self.last is None or self.last_at is None:
            count = "an unknown number of jobs (never counted)"
        else:
            count = (
                f"about {self.lost} jobs ({self.last.ready} ready, {self.last.delayed} delayed,"
                f" {self.last.in_flight} in flight, counted {max(0.0, self.at - self.last_at):.0f}s"
                " before)"
            )
        return (
            f"Redis lost queue {self.queue!r} at {when} ({self.how}): {count} are gone"
            " without a trace; POST /health/acknowledge once handled"
        )

    def issue(self) -> BrokerIssue:
        return BrokerIssue(
            name=f"data_loss:{self.queue}", severity="unhealthy", detail=self.describe()
        )
