"""KeyedLimiters: one limiter per key, made on first use, forgotten when idle.

A limiter per tenant (or per channel, or per anything a job names) must not
mean a limiter per tenant *for ever*: a million tenants that each ran one job
would keep a million limiters. So limiters are made lazily and, once idle (no
holder, nobody waiting), go on an LRU list; past ``max_idle`` idle limiters the
least recently used are forgotten.

Forgetting a limiter must not forget a limit. A local limiter's whole state is
its GCRA ``tat``: one is forgotten only once that lies in the past, when a new
limiter for the key would decide exactly as it would (a fresh limiter and a
recharged one are the same state). An idle limiter not yet recharged is kept,
so the idle list can run over ``max_idle`` by the keys touched within the last
``burst`` intervals, and no further. A Redis limiter's state lives in Redis, so
forgetting it loses nothing: its lease renewal stops and whatever it still
carries goes back.
"""

from __future__ import annotations

import contextvars
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._capacity import CapacityInterface
from ._local import RateLimiter

if TYPE_CHECKING:
    from ._redis import RedisRateLimiter


@attrs.frozen(kw_only=True)
class LimiterSettings:
    """What every key's limiter is built with."""

    rate: float | None
    period: float = 1.0
    burst: int = 1
    concurrency: int | None = None


@attrs.define(eq=False)
class _Entry:
    limiter: CapacityInterface
    users: int = 0
    """Tasks waiting for or holding a token: while any, the limiter stays."""
    stop: trio.CancelScope | None = None
    """A Redis limiter's lease renewal task."""


class KeyedLimiters:
    """Limiters by key, all alike; made lazily, the idle ones bounded (an LRU).

    Use :meth:`acquire` and :meth:`release` (on behalf of a borrower), not the
    limiters themselves: they keep each key's count of users.

    Args:
        settings: the limit each key gets.
        max_idle: idle limiters kept before the least recently used are forgotten.
        make: builds the limiter for a key (default: an in-process
            :class:`RateLimiter`; :func:`open_redis_keyed_limiters` gives one
            shared through Redis).
    """

    def __init__(
        self,
        settings: LimiterSettings,
        *,
        max_idle: int = 10_000,
        make: Callable[[str], _Entry] | None = None,
        forget: Callable[[_Entry], None] | None = None,
    ) -> None:
        if isinstance(max_idle, bool) or not isinstance(max_idle, int) or max_idle < 0:
            raise ValueError(f"max_idle must be an int >= 0, got {max_idle!r}")
        self.settings = settings
        self.max_idle = max_idle
        self._make = make if make is not None else self._make_local
        self._forget = forget
        self._entries: dict[str, _Entry] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()

    def __len__(self) -> int:
        """Limiters alive now (busy and idle)."""
        return len(self._entries)

    @property
    def idle(self) -> int:
        return len(self._idle)

    def limiter(self, key: str) -> CapacityInterface | None:
        """The limiter of ``key``, if one exists now."""
        entry = self._entries.get(key)
        return None if entry is None else entry.limiter

    async def acquire(self, key: str, borrower: object) -> None:
        """Take a token of ``key``'s limiter for ``borrower``, waiting as it says."""
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = self._make(key)
        else:
            self._idle.pop(key, None)
        entry.users += 1
        try:
            await entry.limiter.acquire_on_behalf_of(borrower)
        except BaseException:
            self._done(key, entry)
            raise

    def release(self, key: str, borrower: object) -> None:
        """Give back ``borrower``'s token of ``key``'s limiter."""
        entry = self._entries[key]
        try:
            entry.limiter.release_on_behalf_of(borrower)
        finally:
            self._done(key, entry)

    def _done(self, key: str, entry: _Entry) -> None:
        entry.users -= 1
        if entry.users == 0:
            self._idle[key] = None
            self._trim()

    def _trim(self) -> None:
        while len(self._idle) > self.max_idle:
            key = next(iter(self._idle))
            entry = self._entries[key]
            if not _recharged(entry.limiter):
                # The oldest idle one is not back to a fresh state yet; the rest
                # were used later still. Forgetting it would grant a new burst.
                return
            del self._idle[key]
            del self._entries[key]
            if self._forget is not None:
                self._forget(entry)

    def _make_local(self, key: str) -> _Entry:
        s = self.settings
        return _Entry(
            # Not reported: the job_limit_waited event counts these waits, by worker.
            RateLimiter(s.rate, s.period, concurrency=s.concurrency, burst=s.burst, report=False),
        )


def _recharged(limiter: CapacityInterface) -> bool:
    # Only idle limiters are asked (no holder, no waiter): is_fresh is their rate state.
    if isinstance(limiter, RateLimiter):
        return limiter.is_fresh()
    return True


@asynccontextmanager
async def open_redis_keyed_limiters(
    client: Any,
    prefix: str,
    settings: LimiterSettings,
    *,
    max_idle: int = 10_000,
    lease: float = 30.0,
    poll_interval: float = 0.05,
) -> AsyncIterator[KeyedLimiters]:
    """Keyed limiters shared by every process that uses ``prefix`` on this Redis.

    ``client`` is a connected coredis client (a broker's, say), which all keys'
    limiters share; key ``k`` is the :class:`RedisRateLimiter` named
    ``prefix + k``. On a Redis Cluster, ``prefix`` must hold a hash tag
    (``{app}:``) so that each limiter's keys share a slot. On exit every token
    still held here goes back.
    """
    # Imported here, not at the top: every app imports this module (through
    # guild.Limit), and only apps on Redis should pay for loading coredis.
    from ._redis import RedisRateLimiter

    # Limiters are made inside jobs' tasks: their renewal tasks must not inherit
    # (and log with) whichever job's context variables happened to make them.
    context = contextvars.copy_context()
    async with trio.open_nursery() as nursery:

        def make(key: str) -> _Entry:
            limiter = RedisRateLimiter(
                client,
                prefix + key,
                settings.rate,
                settings.period,
                burst=settings.burst,
                concurrency=settings.concurrency,
                lease=lease,
                poll_interval=poll_interval,
                report=False,
            )
            stop = trio.CancelScope()
            # Set now, not when the task first runs: the caller acquires at once.
            limiter._maintained = True
            context.run(nursery.start_soon, _maintain, limiter, stop)
            return _Entry(limiter, stop=stop)

        def forget(entry: _Entry) -> None:
            if entry.stop is not None:
                entry.stop.cancel()

        keyed = KeyedLimiters(settings, max_idle=max_idle, make=make, forget=forget)
        try:
            yield keyed
        finally:
            nursery.cancel_scope.cancel()


async def _maintain(limiter: RedisRateLimiter, stop: trio.CancelScope) -> None:
    with stop:
        try:
            await limiter._maintain()
        finally:
            limiter._maintained = False
            # Shielded inside, bounded: what it holds or carries goes back now.
            await limiter._give_everything_back()
