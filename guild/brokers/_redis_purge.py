"""Deleting jobs from the Redis broker: ``purge`` and the dead letters' retention.

Redis runs one script at a time, so a script over half a million jobs would stop
every worker for its length. A purge therefore walks the keys that can hold the
statuses asked for with cursors that survive deletion (``SCAN``, from a script, for job hashes,
``ZSCAN`` for the delayed and dead sets, ``XRANGE`` from the last id seen for a
stream), and hands the ids to the ``@purge`` script ``BATCH`` at a time; the
script checks each job's queue, status and age again before it deletes it, so a
job that moved on in between is left alone. Done and cancelled jobs are indexed
nowhere (their hashes expire on their own), so purging them scans the prefix's
job hashes.

Retention of done and cancelled jobs is their keys' TTL; dead letters are kept
in a sorted set by time of death, which claims prune (``@prune_dead``) once a
sweep period (``Retention.sweep_every``) per queue, ``BATCH`` at a time,
when ``Retention.dead`` is set.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from .._job import JobStatus, Priority
from . import _redis_keys as keys

BATCH = 500
"""Ids one script call looks at, at most."""

Call = Callable[[str, Sequence[Any]], Awaitable[Any]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def _stream_ids(client: Any, stream: str) -> AsyncIterator[list[str]]:
    start = "-"
    while True:
        entries = await client.xrange(stream, start, "+", count=BATCH)
        if not entries:
            return
        ids = []
        for entry in entries:
            fields = {_text(k): v for k, v in entry.field_values.items()}
            if "j" in fields:
                ids.append(_text(fields["j"]))
        yield ids
        start = "(" + _text(entries[-1].identifier)


async def _zset_ids(client: Any, key: str) -> AsyncIterator[list[str]]:
    cursor = 0
    while True:
        cursor, members = await client.zscan(key, cursor, count=BATCH)
        yield [_text(member.member) for member in members]
        if cursor == 0:
            return


async def _job_ids(call: Call) -> AsyncIterator[list[str]]:
    # SCAN from a script: on a cluster it runs on the node holding the prefix.
    cursor = "0"
    while True:
        found = await call("scan_jobs", [cursor, BATCH])
        cursor = _text(found[0])
        yield [_text(job_id) for job_id in found[1:]]
        if cursor == "0":
            return


async def purge(
    client: Any,
    call: Call,
    prefix: str,
    queue: str,
    statuses: Collection[JobStatus],
    now: float,
    cutoff: float | None,
) -> int:
    """Delete the jobs of ``queue`` in ``statuses`` aged from ``cutoff`` or before."""
    wanted = {status.value for status in statuses}
    sources: list[AsyncIterator[list[str]]] = []
    if wanted & {"done", "cancelled"}:
        sources.append(_job_ids(call))  # every job: nothing else is needed
    else:
        if "ready" in wanted:
            sources.append(_stream_ids(client, keys.ready(prefix, queue)))
            for level in (Priority.HIGH, Priority.LOW):
                sources.append(_zset_ids(client, keys.ready_level(prefix, queue, level)))
        if wanted & {"ready", "delayed"}:
            sources.append(_zset_ids(client, keys.delayed(prefix, queue)))
        if "dead" in wanted:
            sources.append(_zset_ids(client, keys.dead(prefix, queue)))
    args = [queue, repr(now), "" if cutoff is None else repr(cutoff), ",".join(sorted(wanted))]
    total = 0
    for source in sources:
        async for ids in source:
            if ids:
                total += int(await call("purge", [*args, *ids]))
    return total


async def prune_dead(call: Call, queue: str, cutoff: float) -> int:
    """Delete the dead letters of ``queue`` that died at ``cutoff`` or before."""
    total = 0
    while True:
        deleted = int(await call("prune_dead", [queue, repr(cutoff), BATCH]))
        total += deleted
        if deleted < BATCH:
            return total
