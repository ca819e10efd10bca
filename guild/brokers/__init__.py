"""Brokers: where jobs wait. ``open_broker(url)`` picks one from a URL.

``SqliteBroker`` and ``RedisBroker`` are imported on first use, so a program
that never touches Redis never imports its client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._protocol import Broker as Broker
from ._url import open_broker as open_broker
from .memory import MemoryBroker as MemoryBroker

if TYPE_CHECKING:
    from .redis import RedisBroker as RedisBroker
    from .sqlite import SqliteBroker as SqliteBroker

__all__ = ["Broker", "MemoryBroker", "RedisBroker", "SqliteBroker", "open_broker"]


def __getattr__(name: str) -> Any:
    if name == "SqliteBroker":
        from .sqlite import SqliteBroker

        return SqliteBroker
    if name == "RedisBroker":
        from .redis import RedisBroker

        return RedisBroker
    raise AttributeError(f"module 'guild.brokers' has no attribute {name!r}")
