"""Finished workflows go when their retention runs out, as finished jobs do.

A finished workflow's record (its spec, its state, every step's result) is
kept for ``Retention.record`` seconds after it was last written, the same time
a done job's record is kept, so that ``guild workflow show`` of a finished
workflow works as long as ``guild job show`` of its steps. Then it is deleted.
An active workflow (running or compensating) is never deleted, however old.

:func:`expired` is the rule (pure, time passed in); :func:`expire` applies it
to a store page by page; every app's coordinator runs it every
``Retention.sweep_every`` seconds, and ``guild workflow purge`` runs it now.
Both use :func:`retention_of` the broker, so they keep records equally long.
"""

from __future__ import annotations

from collections.abc import Iterable

from .._retention import Retention
from ._machine import FINISHED_STATUSES
from ._store import WorkflowRecord, WorkflowStore

PAGE = 500
"""Finished records read per page (one ``list_workflows`` call)."""

_FINISHED = sorted(FINISHED_STATUSES)


def retention_of(broker: object) -> Retention:
    """The :class:`Retention` ``broker`` keeps finished records by.

    The built-in brokers expose it as ``broker.retention``; a broker without one
    (a third-party :class:`~guild.brokers.Broker`) gets the default.
    """
    kept = getattr(broker, "retention", None)
    return kept if isinstance(kept, Retention) else Retention()


def expired(
    records: Iterable[WorkflowRecord], retention: Retention, now: float, *, older_than: float = 0.0
) -> list[str]:
    """The ids of the finished ``records`` whose retention has run out at ``now``.

    ``older_than`` (seconds) instead deletes every finished record last written at
    least that long ago, retention or not (``guild workflow purge --older-than``).
    """
    limit = now - older_than if older_than > 0 else None
    return [
        record.id
        for record in records
        if record.status in FINISHED_STATUSES
        and (
            record.updated_at <= limit
            if limit is not None
            else retention.record_expires(record.updated_at) <= now
        )
    ]


async def expire(
    store: WorkflowStore,
    retention: Retention,
    now: float,
    *,
    older_than: float = 0.0,
    page: int = PAGE,
) -> int:
    """Delete the finished workflows :func:`expired` names; how many were deleted.

    Pages are read oldest created first. A full page with nothing to delete ends
    the walk: the records after it were created later, so they were mostly
    written later too, and the next sweep comes back for any stragglers.
    """
    deleted = 0
    while True:
        records = await store.list_workflows(statuses=_FINISHED, limit=page)
        ids = expired(records, retention, now, older_than=older_than)
        if ids:
            deleted += await store.delete_workflows(ids)
        if len(records) < page or not ids:
            return deleted
