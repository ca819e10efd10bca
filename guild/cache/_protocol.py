"""The cache Protocol: async get/set with a TTL, JSON values."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class Cache(Protocol):
    """A TTL key-value cache of JSON values."""

    async def get(self, key: str) -> Any | None:
        """The value under ``key``, or ``None`` if absent or expired."""
        ...

    async def set(self, key: str, value: Any, *, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""
        ...

    async def delete(self, key: str) -> None:
        """Forget ``key`` (no error if absent)."""
        ...
