"""Rate limiting with the ``trio.CapacityLimiter`` interface.

* :class:`RateLimiter` — in-process: at most ``rate`` per ``period`` and at most
  ``concurrency`` at once, FIFO-fair.
* :class:`RedisRateLimiter` — the same contract, both limits shared by every
  process on every machine through Redis (tokens are leases that come back
  when their process dies).
* :func:`admit` / :class:`Rate` — the pure admission math both use.
* :class:`KeyedLimiters` — one limiter per key, made lazily, the idle ones
  bounded (what ``guild.Limit`` waits at); :func:`open_redis_keyed_limiters`
  makes them shared through Redis.
"""

from __future__ import annotations

import typing

from .. import _lazy
from ._gcra import Decision as Decision
from ._gcra import Rate as Rate
from ._gcra import admit as admit
from ._keyed import KeyedLimiters as KeyedLimiters
from ._keyed import LimiterSettings as LimiterSettings
from ._keyed import open_redis_keyed_limiters as open_redis_keyed_limiters
from ._local import RateLimiter as RateLimiter
from ._local import RateLimiterStatistics as RateLimiterStatistics

if typing.TYPE_CHECKING:
    from ._redis import RedisRateLimiter as RedisRateLimiter

# coredis is loaded on first use of the Redis limiter: every app imports this
# package (guild.Limit waits at its limiters), few share limits through Redis.
# Hidden from type checkers, which would otherwise accept any name at all.
if not typing.TYPE_CHECKING:
    __getattr__, __dir__ = _lazy.lazy_exports(__name__, globals(), {"RedisRateLimiter": "._redis"})

__all__ = [
    "Decision",
    "KeyedLimiters",
    "LimiterSettings",
    "Rate",
    "RateLimiter",
    "RateLimiterStatistics",
    "RedisRateLimiter",
    "admit",
    "open_redis_keyed_limiters",
]
