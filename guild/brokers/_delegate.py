"""Broker methods that hand the Ledger and workflow-store calls to a helper object.

Each broker keeps its counts, marks and workflow records in a separate object
(``MemoryLedger``, ``SqliteWorkflows``, ...) and exposes their methods as its
own, so ``isinstance(broker, Ledger)`` holds. These mixins write that forwarding
once; a broker that must do more per call (Redis checks it is open before each
Ledger call) defines those methods itself.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

from ._ledger import Ledger
from ._workflow_store import WorkflowRecord, WorkflowStore


class LedgerDelegate:
    """The Ledger methods, each forwarded to ``self._ledger``."""

    _ledger: Ledger

    async def add_counts(self, namespace: str, key: str, counts: Mapping[str, float]) -> None:
        await self._ledger.add_counts(namespace, key, counts)

    async def get_counts(self, namespace: str) -> dict[str, dict[str, float]]:
        return await self._ledger.get_counts(namespace)

    async def count_namespaces(self) -> list[str]:
        return await self._ledger.count_namespaces()

    async def mark(self, namespace: str, key: str, *, ttl: float, value: str = "") -> bool:
        return await self._ledger.mark(namespace, key, ttl=ttl, value=value)

    async def marked(self, namespace: str, keys: Collection[str]) -> dict[str, str]:
        return await self._ledger.marked(namespace, keys)


class WorkflowDelegate:
    """The WorkflowStore methods, each forwarded to ``self._workflows``."""

    _workflows: WorkflowStore

    async def create_workflow(self, record: WorkflowRecord) -> bool:
        return await self._workflows.create_workflow(record)

    async def get_workflow(self, workflow_id: str) -> WorkflowRecord | None:
        return await self._workflows.get_workflow(workflow_id)

    async def list_workflows(
        self, *, statuses: Collection[str] | None = None, limit: int = 100
    ) -> list[WorkflowRecord]:
        return await self._workflows.list_workflows(statuses=statuses, limit=limit)

    async def update_workflow(
        self, workflow_id: str, *, version: int, status: str, state: str
    ) -> bool:
        return await self._workflows.update_workflow(
            workflow_id, version=version, status=status, state=state
        )

    async def delete_workflows(self, workflow_ids: Sequence[str]) -> int:
        return await self._workflows.delete_workflows(workflow_ids)
