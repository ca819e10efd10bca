"""The workflow store (``guild.workflows.WorkflowStore``) on Redis.

A hash per workflow plus sorted-set indexes by ``created_at`` (every workflow,
and one per status); the layout and the scripts are in ``_redis_workflows.lua``.
Every write is one script, so the compare-and-set of ``update_workflow`` and the
index moves it makes are atomic. Every key starts with the broker's prefix,
which on a Redis Cluster is the hash tag of the queue keys: each script names
the broker's anchor key as ``KEYS[1]`` and so runs on the node holding them all.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import trio

from .._errors import BrokerClosed
from . import _redis_keys as keys
from ._redis_errors import map_redis_exceptions
from ._redis_scripts import load_scripts
from ._workflow_store import (
    FIELDS,
    WorkflowRecord,
    check_create,
    check_id,
    check_ids,
    check_list,
    check_update,
    readable,
    readable_or_raise,
    record_from_stored,
)

_ROW = 1 + len(FIELDS)


SCRIPTS = load_scripts("_redis_workflows.lua")


class RedisWorkflows:
    """The workflow store on a broker's Redis client.

    Args:
        client: the broker's ``coredis.Redis`` or ``coredis.RedisCluster``.
        prefix: the broker's key prefix (already hash-tagged on a cluster).
        closed: says whether the broker is closed.
        now: the broker's clock, for ``updated_at``.
    """

    def __init__(
        self, client: Any, prefix: str, closed: Callable[[], bool], now: Callable[[], float]
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._keys = [keys.anchor(prefix)]
        self._closed = closed
        self._now = now
        self._scripts = {name: client.register_script(body) for name, body in SCRIPTS.items()}

    def _check_open(self) -> None:
        if self._closed():
            raise BrokerClosed("the redis broker is closed")

    async def _call(self, name: str, args: Sequence[Any]) -> Any:
        self._check_open()
        with map_redis_exceptions(f"workflow {name}"):
            return await self._scripts[name](keys=self._keys, args=[self._prefix, *args])

    async def create_workflow(self, record: WorkflowRecord) -> bool:
        check_create(record)
        args = [
            record.id,
            record.name,
            record.status,
            record.spec,
            record.state,
            str(record.version),
            repr(float(record.created_at)),
            repr(float(record.updated_at)),
        ]
        return int(await self._call("create", args)) == 1

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        check_id(workflow_id)
        self._check_open()
        with map_redis_exceptions("workflow get"):
            values = await self._client.hmget(keys.workflow(self._prefix, workflow_id), FIELDS)
        if all(value is None for value in values):
            return None
        found = record_from_stored(dict(zip(FIELDS, values, strict=True)))
        return readable_or_raise(workflow_id, found)

    async def list_workflows(
        self, *, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[WorkflowRecord]:
        wanted = check_list(statuses, limit)
        if limit == 0 or wanted == []:
            await self._nothing()
            return []
        selector = ["all"] if wanted is None else ["some", *wanted]
        found: list[tuple[object, WorkflowRecord | str]] = []
        offset = good = 0
        # Pages until ``limit`` readable records: unreadable ones are skipped.
        while True:
            want = limit - good
            flat = await self._call("list", [offset, want, *selector])
            rows = [flat[i : i + _ROW] for i in range(0, len(flat), _ROW)]
            offset += len(rows)
            for row in rows:
                if all(value is None for value in row[1:]):
                    continue  # an index entry whose hash is gone
                record = record_from_stored(dict(zip(FIELDS, row[1:], strict=True)))
                if (
                    isinstance(record, WorkflowRecord)
                    and wanted is not None
                    and record.status not in wanted
                ):
                    continue  # a status index entry a hand edit left behind
                found.append((row[0], record))
                good += isinstance(record, WorkflowRecord)
            if good >= limit or len(rows) < want:
                return readable(found)

    async def update_workflow(
        self, workflow_id: str, *, version: int, status: str, state: str
    ) -> bool:
        check_update(workflow_id, version, status, state)
        args = [workflow_id, str(version), str(version + 1), status, state, repr(self._now())]
        return int(await self._call("update", args)) == 1

    async def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        ids = check_ids(workflow_ids)
        if not ids:
            await self._nothing()
            return 0
        return int(await self._call("delete", ids))

    async def _nothing(self) -> None:
        """A call with nothing to do: still refused once closed, still a checkpoint."""
        self._check_open()
        await trio.lowlevel.checkpoint()
