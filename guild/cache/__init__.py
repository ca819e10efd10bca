"""Caches with a TTL: in memory, or in Redis for many processes; ``@cached`` for functions.

* :class:`Cache` — the Protocol (async ``get`` / ``set(ttl=)`` / ``delete``).
* :class:`MemoryCache` — in-process, LRU-bounded, TTL by Trio's clock.
* :class:`RedisCache` — shared through Redis, JSON values.
* :func:`cached` — memoise an async function, with single-flight per key.
"""

from __future__ import annotations

from ._cached import cached as cached
from ._cached import default_key as default_key
from ._memory import MemoryCache as MemoryCache
from ._protocol import Cache as Cache
from ._redis import RedisCache as RedisCache

__all__ = ["Cache", "MemoryCache", "RedisCache", "cached", "default_key"]
