"""RedisRateLimiter: one GCRA limit shared by every process that names it.

The arithmetic is ``_gcra.admit``, run inside Redis as one Lua script so the
read-decide-write is atomic across processes. Time is Redis's own ``TIME``, so
machines with skewed clocks still share one schedule. The state is a single key
holding the theoretical arrival time; it expires once the limiter is idle, so
idle limiters cost nothing.

Only the rate is shared: there is no cross-process count of holders (use a
per-process :class:`RateLimiter` with ``concurrency`` for that), so ``release``
is nothing to do and ``async with`` only waits for admission.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any

import coredis
import coredis.exceptions
import trio

from .._errors import BrokerUnavailable
from ._gcra import Rate

KEY_PREFIX = "guild:ratelimit:"

# KEYS[1]: the limiter's key. ARGV: interval, tolerance (seconds).
# Returns {1, "0"} when admitted, {0, retry_after_seconds} when not.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = tonumber(stored) end
local earliest = tat - tolerance
if now < earliest then
  return {0, tostring(earliest - now)}
end
local new_tat = math.max(tat, now) + interval
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
return {1, '0'}
"""


class RedisRateLimiter:
    """At most ``rate`` admissions per ``period`` across every process using ``name``.

    Open it with :meth:`open`, which owns the Redis connection::

        async with RedisRateLimiter.open("redis://redis:6379/0", "llm", rate=50) as limiter:
            async with limiter:
                await call_the_api()

    Raises (from its methods):
        BrokerUnavailable: Redis cannot be reached; the cause is ``__cause__``.
    """

    def __init__(
        self, client: Any, name: str, rate: float, period: float = 1.0, *, burst: int = 1
    ) -> None:
        self._rate = Rate(rate=rate, period=period, burst=burst)
        self._key = KEY_PREFIX + name
        self._client = client
        self._script = client.register_script(GCRA_SCRIPT)
        self.name = name

    @classmethod
    @asynccontextmanager
    async def open(
        cls, url: str, name: str, rate: float, period: float = 1.0, *, burst: int = 1
    ) -> AsyncIterator[RedisRateLimiter]:
        """Connect to ``url`` and yield a limiter; the connection closes on exit."""
        client: Any = coredis.Redis.from_url(url)
        try:
            async with client:
                yield cls(client, name, rate, period, burst=burst)
        except BaseExceptionGroup as group:
            # coredis runs its pool in a task group, which wraps whatever leaves the
            # block; a lone exception is re-raised as itself, as the caller raised it.
            leaves = _leaves(group)
            if len(leaves) == 1:
                raise leaves[0] from None
            raise
        except (coredis.exceptions.ConnectionError, OSError) as exc:
            raise BrokerUnavailable(f"redis at {url} is unreachable: {exc}") from exc

    async def _ask(self) -> float:
        """One admission attempt: 0.0 when admitted, else seconds to wait."""
        try:
            admitted, retry_after = await self._script(
                keys=[self._key],
                args=[repr(self._rate.interval), repr(self._rate.tolerance)],
            )
        except (coredis.exceptions.ConnectionError, TimeoutError, OSError) as exc:
            raise BrokerUnavailable(f"rate limiter {self.name!r}: redis unreachable") from exc
        return 0.0 if int(admitted) == 1 else max(float(retry_after), 1e-3)

    async def try_acquire(self) -> bool:
        """Admit now if the shared rate allows; never waits (a network round trip)."""
        return await self._ask() == 0.0

    async def acquire(self) -> float:
        """Wait until admitted; returns the seconds waited."""
        waited = 0.0
        while True:
            delay = await self._ask()
            if delay == 0.0:
                return waited
            await trio.sleep(delay)
            waited += delay

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await trio.lowlevel.checkpoint()

    @property
    def rate(self) -> Rate:
        return self._rate

    def __repr__(self) -> str:
        limit = f"{self._rate.rate:g}/{self._rate.period:g}s"
        return f"<RedisRateLimiter {self.name!r} {limit} burst={self._rate.burst}>"


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found += _leaves(exc)
        else:
            found.append(exc)
    return found
