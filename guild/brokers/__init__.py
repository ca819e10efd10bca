"""Brokers: where jobs wait. ``open_broker(url)`` picks one from a URL.

``MemoryBroker``, ``SqliteBroker`` and ``RedisBroker`` are imported on first
use, so a program that never touches Redis never imports its client, and one on
SQLite or Redis never builds the memory broker. For writing a broker:
``encode_result``/``ResultJSON`` (what ``ack`` stores), ``job_from_row``/``BadRow``
(a stored row to a job, or the reason it is none) and ``RawStorable`` (the hook
the conformance suite stores garbage through). ``Ledger`` is the optional
protocol of durable counts and marks that workers keep in the broker;
``Purgeable`` the optional ``purge`` behind ``guild purge``; ``EnqueuesAndWaits``
the optional one-call ``enqueue_and_wait``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._codec import ROW_FIELDS as ROW_FIELDS
from .._codec import BadRow as BadRow
from .._codec import ResultJSON as ResultJSON
from .._codec import encode_result as encode_result
from .._codec import job_from_row as job_from_row
from ._ledger import Ledger as Ledger
from ._protocol import PURGEABLE as PURGEABLE
from ._protocol import Broker as Broker
from ._protocol import BrokerIssue as BrokerIssue
from ._protocol import Diagnosable as Diagnosable
from ._protocol import EnqueuesAndWaits as EnqueuesAndWaits
from ._protocol import Purgeable as Purgeable
from ._protocol import RawStorable as RawStorable
from ._url import open_broker as open_broker

if TYPE_CHECKING:
    from .memory import MemoryBroker as MemoryBroker
    from .redis import RedisBroker as RedisBroker
    from .sqlite import SqliteBroker as SqliteBroker

__all__ = [
    "PURGEABLE",
    "ROW_FIELDS",
    "BadRow",
    "Broker",
    "BrokerIssue",
    "Diagnosable",
    "EnqueuesAndWaits",
    "Ledger",
    "MemoryBroker",
    "Purgeable",
    "RawStorable",
    "RedisBroker",
    "ResultJSON",
    "SqliteBroker",
    "encode_result",
    "job_from_row",
    "open_broker",
]


def __getattr__(name: str) -> Any:
    if name == "MemoryBroker":
        from .memory import MemoryBroker

        return MemoryBroker
    if name == "SqliteBroker":
        from .sqlite import SqliteBroker

        return SqliteBroker
    if name == "RedisBroker":
        from .redis import RedisBroker

        return RedisBroker
    raise AttributeError(f"module 'guild.brokers' has no attribute {name!r}")
