"""RedisCache: a cache shared by processes, values stored as JSON with Redis TTLs."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import coredis.exceptions

from .._errors import BrokerUnavailable
from .._groups import leaves

_REDIS_ERRORS = (coredis.exceptions.ConnectionError, TimeoutError, OSError)


class RedisCache:
    """A TTL cache in Redis; open it with :meth:`open`, which owns the connection.

    Raises (from its methods):
        BrokerUnavailable: Redis cannot be reached; the cause is ``__cause__``.
    """

    def __init__(self, client: Any, *, prefix: str = "guild:cache:") -> None:
        self._client = client
        self._prefix = prefix

    @classmethod
    @asynccontextmanager
    async def open(cls, url: str, *, prefix: str = "guild:cache:") -> AsyncIterator[RedisCache]:
        client: Any = coredis.Redis.from_url(url, decode_components=True)
        try:
            async with client:
                yield cls(client, prefix=prefix)
        except BaseExceptionGroup as group:
            found = leaves(group)
            if len(found) == 1:
                raise found[0] from None
            raise
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"redis at {url} is unreachable: {exc}") from exc

    async def get(self, key: str) -> Any | None:
        try:
            raw = await self._client.get(self._prefix + key)
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable("cache: redis unreachable") from exc
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any, *, ttl: float) -> None:
        if not (ttl > 0 and not math.isnan(ttl)):
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        data = json.dumps(value, separators=(",", ":"))
        try:
            await self._client.set(self._prefix + key, data, px=max(1, int(ttl * 1000)))
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable("cache: redis unreachable") from exc

    async def delete(self, key: str) -> None:
        try:
            await self._client.delete([self._prefix + key])
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable("cache: redis unreachable") from exc
