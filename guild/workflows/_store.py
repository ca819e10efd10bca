"""The workflow store: :class:`WorkflowRecord` and the :class:`WorkflowStore` protocol.

Both are defined in ``guild.brokers._workflow_store``, beside the memory broker's
store, because every broker builds records: the brokers must not import this
package (it imports the app, which imports the brokers). This module is where the
workflow code takes them from. Implementations: ``MemoryBroker``,
``SqliteBroker`` (``_sqlite_workflows``), ``RedisBroker`` (``_redis_workflows``).
"""

from __future__ import annotations

from ..brokers._workflow_store import WorkflowRecord as WorkflowRecord
from ..brokers._workflow_store import WorkflowStore as WorkflowStore

__all__ = ["WorkflowRecord", "WorkflowStore"]
