"""RedisRateLimiter: ``trio.CapacityLimiter``'s contract, one limit shared through Redis.

Theory of operation. Four keys per limiter name:

* ``guild:ratelimit:<name>`` holds the GCRA state (the theoretical arrival
  time), as ``_gcra.admit`` computes it;
* ``guild:ratelimit:<name>:holders`` is a sorted set of the tokens borrowed by
  every process, each scored by the time its *lease* runs out;
* ``guild:ratelimit:<name>:waiters`` is the line of waiting processes (each
  process's first waiter, scored by arrival), and ``...:waiters:expiry`` when
  each place in it lapses.

Taking a token is one Lua script, atomic across processes and timed by Redis's
own ``TIME`` (so skewed machine clocks agree): drop expired leases and lapsed
places, refuse if the holders plus the waiters ahead of the caller reach
``total_tokens``, else ask the GCRA, else add the token with a lease. While a
process holds tokens or a place in line, a maintenance task renews them every
third of a lease, so a token or a place outlives its lease only if its process
has died or hung: then it comes back by itself.

Within one process, waiters queue FIFO and only the head of the queue talks to
Redis, under one name that keeps its place in the line of processes; the
others sleep until it is admitted or leaves. So no process can keep a token
from another by always having a waiter ready. The head retries when a token is
released in this process (at once), when the rate allows (exactly), or when
another process may have released one (every ``poll_interval``, or when the
first lease runs out, whichever is sooner).

Releasing is synchronous, as trio's interface requires, and does no I/O: the
token goes on a return list that the next script this process runs carries to
Redis: the head waiter's next attempt, made at once, or else the maintenance
task, woken at once. The ``*_nowait`` methods must answer without awaiting, so
they make one *blocking* round trip on their own small connection, bounded by
``blocking_timeout``; they refuse while any process has a waiter in line.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import re
import socket
import ssl
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import attrs
import coredis
import coredis.exceptions
import structlog
import trio

from .._errors import BrokerDataError, BrokerError, BrokerUnavailable, RateLimitError
from .._groups import leaves
from ..observability._current import emit_here
from ..observability._feature_events import RateLimited
from ._capacity import CapacityInterface
from ._gcra import Rate
from ._local import RateLimiterStatistics, checked_hold, checked_total_tokens

KEY_PREFIX = "guild:ratelimit:"

# The type each script's keys must hold (a key that does not exist passes),
# checked by each script before it reads or writes anything: a key of another
# type (another program's, under guild's prefix) would fail a command midway,
# after earlier commands of the script had written, and Redis's WRONGTYPE error
# names no key. The script refuses with ``WRONGTYPE guild-ratelimit key N holds
# TYPE`` instead (N: the key's place in KEYS), from which ``_refused`` names it.
STATE_KINDS = ("string",)
LINE_KINDS = ("zset", "zset", "zset")  # holders, waiters (by arrival), waiters (by expiry)
ACQUIRE_KINDS = STATE_KINDS + LINE_KINDS


def _checking_types(kinds: Sequence[str], body: str) -> str:
    wanted = ", ".join(f"'{kind}'" for kind in kinds)
    return (
        f"""
for i, want in ipairs({{{wanted}}}) do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= want then
    return redis.error_reply('WRONGTYPE guild-ratelimit key ' .. i .. ' holds ' .. kind)
  end
end"""
        + body
    )


# KEYS: GCRA state, holders, waiters (by arrival), waiters (by expiry).
# ARGV: member ('' to ask the rate alone), limit (-1: none), lease, interval,
# tolerance (seconds), mode, then members to return. In mode 'wait' the member
# joins (or keeps its place in) the line of waiting processes and may take a
# token only if fewer than the free tokens stand ahead of it; in mode 'now' it
# may take one only if nobody waits at all.
# Returns {1, 'ok', '0'} when admitted, {0, 'rate', seconds} when the rate
# refuses, {0, 'full', seconds until the first lease ends, or -1}, and
# {-1, 'damaged', '0'}, having written nothing, when the GCRA state is not a
# finite number (another program's value).
ACQUIRE_SCRIPT = _checking_types(
    ACQUIRE_KINDS,
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
-- The GCRA state first, before anything is written: a value that is no finite
-- number (another program's) would fail the arithmetic below midway.
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then
  tat = tonumber(stored)
  if not tat or tat ~= tat or tat == math.huge or tat == -math.huge then
    return {-1, 'damaged', '0'}
  end
end
local member = ARGV[1]
local limit = tonumber(ARGV[2])
local lease = tonumber(ARGV[3])
local interval = tonumber(ARGV[4])
local tolerance = tonumber(ARGV[5])
local mode = ARGV[6]
local keep_ms = math.ceil(lease * 1000) + 1000
for i = 7, #ARGV do
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
  redis.call('ZREM', KEYS[4], ARGV[i])
end
if member ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  local gone = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now)
  for _, who in ipairs(gone) do
    redis.call('ZREM', KEYS[3], who)
    redis.call('ZREM', KEYS[4], who)
  end
  local ahead
  if mode == 'wait' then
    if not redis.call('ZSCORE', KEYS[3], member) then
      redis.call('ZADD', KEYS[3], now, member)
    end
    redis.call('ZADD', KEYS[4], now + lease, member)
    redis.call('PEXPIRE', KEYS[3], keep_ms)
    redis.call('PEXPIRE', KEYS[4], keep_ms)
    ahead = redis.call('ZRANK', KEYS[3], member)
  else
    ahead = redis.call('ZCARD', KEYS[3])
  end
  local held = redis.call('ZCARD', KEYS[2])
  if (limit >= 0 and held + ahead >= limit) or (mode ~= 'wait' and ahead > 0) then
    local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
    local wait = -1
    if first[2] then wait = tonumber(first[2]) - now end
    return {0, 'full', tostring(wait)}
  end
end
local earliest = tat - tolerance
if now < earliest then
  return {0, 'rate', tostring(earliest - now)}
end
local new_tat = math.max(tat, now) + interval
local ttl_ms = math.ceil((new_tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', new_tat), 'PX', ttl_ms)
if member ~= '' then
  redis.call('ZREM', KEYS[3], member)
  redis.call('ZREM', KEYS[4], member)
  redis.call('ZADD', KEYS[2], now + lease, member)
  redis.call('PEXPIRE', KEYS[2], keep_ms)
end
return {1, 'ok', '0'}
""",
)

# KEYS: holders, waiters (by arrival), waiters (by expiry). ARGV: lease, count of
# members to return, those members, this process's waiting member ('' if none),
# then members to renew. Returns the members to renew that were no longer there.
MAINTAIN_SCRIPT = _checking_types(
    LINE_KINDS,
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local returning = tonumber(ARGV[2])
local keep_ms = math.ceil(lease * 1000) + 1000
for i = 3, 2 + returning do
  redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('ZREM', KEYS[2], ARGV[i])
  redis.call('ZREM', KEYS[3], ARGV[i])
end
local waiting = ARGV[3 + returning]
if waiting ~= '' and redis.call('ZSCORE', KEYS[2], waiting) then
  redis.call('ZADD', KEYS[3], now + lease, waiting)
  redis.call('PEXPIRE', KEYS[2], keep_ms)
  redis.call('PEXPIRE', KEYS[3], keep_ms)
end
local lost = {}
for i = 4 + returning, #ARGV do
  local score = redis.call('ZSCORE', KEYS[1], ARGV[i])
  if score and tonumber(score) > now then
    redis.call('ZADD', KEYS[1], now + lease, ARGV[i])
  else
    redis.call('ZREM', KEYS[1], ARGV[i])
    table.insert(lost, ARGV[i])
  end
end
if #ARGV > 3 + returning then
  redis.call('PEXPIRE', KEYS[1], keep_ms)
end
return lost
""",
)

# KEYS: GCRA state. ARGV: seconds to hold off, tolerance. Moves the theoretical
# arrival time so that the next admission comes no sooner than now + seconds
# (by Redis's clock); never moves it back. Returns 1 if it moved, -1 (leaving
# it) if the stored state is not a finite number (another program's value).
HOLD_SCRIPT = _checking_types(
    STATE_KINDS,
    """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local tat = now + tonumber(ARGV[1]) + tonumber(ARGV[2])
local stored = redis.call('GET', KEYS[1])
if stored then
  local old = tonumber(stored)
  if not old or old ~= old or old == math.huge or old == -math.huge then return -1 end
  if old >= tat then return 0 end
end
local ttl_ms = math.ceil((tat - now) * 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.6f', tat), 'PX', ttl_ms)
return 1
""",
)

_REDIS_ERRORS = (coredis.exceptions.ConnectionError, TimeoutError, OSError)
# What the background work survives: Redis away, or its key clobbered (the
# waiters, which see the same error, report it).
_MAINTENANCE_ERRORS = (*_REDIS_ERRORS, coredis.exceptions.ResponseError)

_log = structlog.get_logger("guild.ratelimit")


@attrs.frozen
class _Answer:
    admitted: bool
    refused_by: str  # "ok", "rate" or "full"
    wait: float  # seconds; math.inf when nothing known will end the wait


@attrs.define(eq=False)
class _Waiter:
    borrower: object
    started: float
    wake: trio.Event = attrs.field(factory=trio.Event)


class RedisRateLimiter(CapacityInterface):
    """At most ``rate`` admissions per ``period`` and ``concurrency`` holders at once,
    across every process on every machine that uses ``name``.

    Open it with :meth:`open`, which owns the Redis connections and the task
    that renews leases::

        async with RedisRateLimiter.open(
            "redis://redis:6379/0", "llm", rate=50, concurrency=8
        ) as limiter:
            async with limiter:
                await call_the_api()

    Every process must give the same ``name`` the same limits.

    Raises (from its methods):
        BrokerUnavailable: Redis cannot be reached; the cause is ``__cause__``.
        BrokerDataError: a key of the limiter's holds what it never wrote: another
            type, or a GCRA state that is not a finite number; the error names
            the key. The call writes nothing, and fails so until the key is
            deleted; a worker waits that out.
        RateLimitError: a borrower acquires twice or releases a token it does not
            hold, or tokens are asked of a limiter not opened with :meth:`open`.
    """

    def __init__(
        self,
        client: Any,
        name: str,
        rate: float | None,
        period: float = 1.0,
        *,
        burst: int = 1,
        concurrency: int | float | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
        url: str | None = None,
        blocking_timeout: float = 1.0,
        report: bool = True,
    ) -> None:
        for label, value in (("lease", lease), ("poll_interval", poll_interval)):
            if not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{label} must be a positive finite number, got {value!r}")
        self._rate = None if rate is None else Rate(rate=rate, period=period, burst=burst)
        self._total: int | float = (
            math.inf if concurrency is None else checked_total_tokens(concurrency, "concurrency")
        )
        self._key = KEY_PREFIX + name
        self._holders_key = KEY_PREFIX + name + ":holders"
        self._waiters_keys = [KEY_PREFIX + name + ":waiters", KEY_PREFIX + name + ":waiters:expiry"]
        self._client = client
        self._acquire_script = client.register_script(ACQUIRE_SCRIPT)
        self._maintain_script = client.register_script(MAINTAIN_SCRIPT)
        self._hold_script = client.register_script(HOLD_SCRIPT)
        self._lease = lease
        self._poll_interval = poll_interval
        self._blocking = None if url is None else _BlockingRedis(url, blocking_timeout)
        self.name = name
        # Off for the limiters made per key (guild.Limit): their names are unbounded.
        self._report = report
        # Tokens are named per process and per acquisition so that one process's
        # release can never remove another's.
        self._process_id = uuid.uuid4().hex
        self._sequence = itertools.count()
        self._borrowers: dict[object, str] = {}
        self._returning: set[str] = set()
        # The head waiter's member while it stands in the line of processes.
        self._waiting_member: str | None = None
        self._queue: OrderedDict[_Waiter, None] = OrderedDict()
        self._kick = trio.Event()
        self._maintenance_due = trio.Event()
        self._maintained = False
        self._admitted = 0
        self._waits = 0
        self._waited = 0.0

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        url: str,
        name: str,
        rate: float | None,
        period: float = 1.0,
        *,
        burst: int = 1,
        concurrency: int | float | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
        blocking_timeout: float = 1.0,
    ) -> AsyncIterator[RedisRateLimiter]:
        """Connect to ``url`` and yield a limiter; on exit its tokens go back and
        the connections close."""
        client: Any = coredis.Redis.from_url(url, decode_components=True)
        try:
            async with client:
                limiter = cls(
                    client,
                    name,
                    rate,
                    period,
                    burst=burst,
                    concurrency=concurrency,
                    lease=lease,
                    poll_interval=poll_interval,
                    url=url,
                    blocking_timeout=blocking_timeout,
                )
                try:
                    async with limiter._kept():
                        yield limiter
                finally:
                    if limiter._blocking is not None:
                        limiter._blocking.close()
        except BaseExceptionGroup as group:
            # The nursery and coredis's pool wrap whatever leaves the block; a lone
            # exception is re-raised as itself, as the caller raised it.
            found = leaves(group)
            if len(found) == 1:
                raise found[0] from None
            raise
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"redis at {url} is unreachable: {exc}") from exc

    @classmethod
    @asynccontextmanager
    async def open_on(
        cls,
        client: Any,
        name: str,
        rate: float | None,
        period: float = 1.0,
        *,
        burst: int = 1,
        concurrency: int | float | None = None,
        lease: float = 30.0,
        poll_interval: float = 0.05,
    ) -> AsyncIterator[RedisRateLimiter]:
        """Yield a limiter on a connected coredis ``client`` that the caller owns
        (a Redis broker's, say): no connection of its own, and no ``*_nowait``
        (they need one; they raise :class:`RateLimitError`). On exit its tokens
        go back; the client stays open.

        On a Redis Cluster, ``name`` must hold a hash tag (``{app}:x``) so that
        the limiter's keys share a slot.
        """
        limiter = cls(
            client,
            name,
            rate,
            period,
            burst=burst,
            concurrency=concurrency,
            lease=lease,
            poll_interval=poll_interval,
        )
        async with limiter._kept():
            yield limiter

    @asynccontextmanager
    async def _kept(self) -> AsyncIterator[RedisRateLimiter]:
        """Renew this limiter's leases while the block runs; on exit, give its
        tokens back (both ways of opening one share this)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._maintain)
            self._maintained = True
            try:
                yield self
            finally:
                self._maintained = False
                nursery.cancel_scope.cancel()
                await self._give_everything_back()

    def __repr__(self) -> str:
        rate = self._rate
        limit = "no rate" if rate is None else f"{rate.rate:g}/{rate.period:g}s burst={rate.burst}"
        return (
            f"<RedisRateLimiter {self.name!r} {limit},"
            f" {len(self._borrowers)}/{self._total} borrowed here,"
            f" {len(self._queue)} waiting>"
        )

    # --- the CapacityLimiter interface -------------------------------------------

    @property
    def total_tokens(self) -> int | float:
        """Holders at once across all processes (``math.inf``: only the rate limits).

        Assigning it changes the limit this process enforces and wakes its head
        waiter at once; give every process the same value.
        """
        return self._total

    @total_tokens.setter
    def total_tokens(self, value: int | float) -> None:
        self._total = checked_total_tokens(value)
        self._kick_head()

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Take a token for ``borrower`` now (one blocking round trip), or raise.

        Raises:
            trio.WouldBlock: no token, the rate forbids it, or others here wait.
            RateLimitError: ``borrower`` holds a token already.
            BrokerUnavailable: Redis did not answer within ``blocking_timeout``.
        """
        self._check_can_borrow(borrower)
        if self._queue:
            raise trio.WouldBlock
        member = self._new_member()
        returning = sorted(self._returning)
        if self._blocking is None:
            raise RateLimitError(
                f"rate limiter {self.name!r}: acquire_nowait needs the limiter's URL;"
                " build it with RedisRateLimiter.open"
            )
        try:
            reply = self._blocking.evalsha(
                ACQUIRE_SCRIPT,
                self._acquire_keys(),
                self._acquire_args(member, self._total, "now", returning),
            )
        except _ReplyError as exc:
            raise _refused(self.name, self._acquire_keys(), ACQUIRE_KINDS, exc) from exc
        answer = self._read_answer(reply)
        self._returning.difference_update(returning)
        if not answer.admitted:
            raise trio.WouldBlock
        self._admit(borrower, member)

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a token for ``borrower``, waiting (FIFO here) as long as needed.

        Raises:
            RateLimitError: ``borrower`` holds a token already.
            BrokerUnavailable: Redis cannot be reached.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._check_can_borrow(borrower)
        me = _Waiter(borrower, trio.current_time())
        behind_others = bool(self._queue)
        self._queue[me] = None
        member: str | None = None
        attempts = 0
        try:
            while True:
                while next(iter(self._queue)) is not me:
                    await me.wake.wait()
                    me.wake = trio.Event()
                kick = self._kick
                if self._total == 0:
                    if member is not None:
                        # Paused here: stand aside so that other processes'
                        # waiters are not kept behind this one.
                        self._returning.add(member)
                        member = self._waiting_member = None
                    if self._returning:
                        self._maintenance_due.set()  # this head will not carry them
                    await kick.wait()
                    continue
                if member is None:
                    # The head keeps one name while it waits: its place in the
                    # line of processes.
                    member = self._waiting_member = self._new_member()
                attempts += 1
                answer = await self._ask(member, self._total, "wait")
                if answer.admitted:
                    break
                if kick.is_set():
                    continue
                delay = answer.wait
                if answer.refused_by == "full":
                    delay = min(delay, self._poll_interval)
                with trio.move_on_after(delay):
                    await kick.wait()
        except BaseException:
            if member is not None:
                # Leave the line of processes; and the script may have admitted
                # it before the cancellation arrived.
                self._returning.add(member)
                self._waiting_member = None
            if self._returning:
                self._maintenance_due.set()
            self._leave_queue(me)
            raise
        self._leave_queue(me)
        self._waiting_member = None
        self._admit(borrower, member)
        if behind_others or attempts > 1:
            waited = trio.current_time() - me.started
            self._waits += 1
            self._waited += waited
            if self._report:
                emit_here("rate_limited", RateLimited(limiter=self.name, waited=waited))

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token (no I/O: it goes back with the next script).

        Raises:
            RateLimitError: ``borrower`` holds no token.
        """
        member = self._borrowers.pop(borrower, None)
        if member is None:
            raise RateLimitError(
                f"this borrower does not hold a token of RedisRateLimiter {self.name!r}"
            )
        self._returning.add(member)
        if self._queue:
            self._kick_head()  # its next attempt carries the token back
        else:
            self._maintenance_due.set()

    def statistics(self) -> RateLimiterStatistics:
        """This process's view: its borrowers, its waiters and its admissions."""
        return RateLimiterStatistics(
            borrowed_tokens=len(self._borrowers),
            total_tokens=self._total,
            borrowers=list(self._borrowers),
            tasks_waiting=len(self._queue),
            admitted=self._admitted,
            waits=self._waits,
            waited_seconds=self._waited,
        )

    # --- the rate alone ----------------------------------------------------------

    async def try_acquire(self) -> bool:
        """Spend one admission of the shared rate if it allows one now; takes no token."""
        answer = await self._ask("", math.inf, "now")
        return answer.admitted

    async def hold_off(self, seconds: float) -> None:
        """Admit no one, in any process, for ``seconds`` from now (by Redis's
        clock), then go on at the rate (no burst).

        For a server's ``Retry-After``: every waiter everywhere waits it out.
        Holders keep their tokens; a hold shorter than one already running
        changes nothing. Works on a limiter without a rate too.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
            BrokerUnavailable: Redis cannot be reached.
        """
        hold = checked_hold(seconds)
        tolerance = 0.0 if self._rate is None else self._rate.tolerance
        try:
            moved = await self._hold_script(keys=[self._key], args=[repr(hold), repr(tolerance)])
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"rate limiter {self.name!r}: redis unreachable") from exc
        except coredis.exceptions.ResponseError as exc:
            raise _refused(self.name, [self._key], STATE_KINDS, exc) from exc
        if int(moved) < 0:
            raise self._damaged()

    # --- internals ---------------------------------------------------------------

    def _check_can_borrow(self, borrower: object) -> None:
        if borrower in self._borrowers:
            raise RateLimitError(
                f"this borrower already holds a token of RedisRateLimiter {self.name!r}"
                " (acquired twice)"
            )
        if not self._maintained:
            raise RateLimitError(
                f"rate limiter {self.name!r} has nothing renewing its leases:"
                " use it inside RedisRateLimiter.open(...)"
            )

    def _new_member(self) -> str:
        return f"{self._process_id}:{next(self._sequence)}"

    def _admit(self, borrower: object, member: str) -> None:
        self._borrowers[borrower] = member
        self._admitted += 1

    def _kick_head(self) -> None:
        self._kick.set()
        self._kick = trio.Event()

    def _leave_queue(self, me: _Waiter) -> None:
        was_head = next(iter(self._queue)) is me
        del self._queue[me]
        if was_head and self._queue:
            next(iter(self._queue)).wake.set()

    def _acquire_keys(self) -> list[str]:
        return [self._key, *self._line_keys()]

    def _line_keys(self) -> list[str]:
        return [self._holders_key, *self._waiters_keys]

    def _told(self, exc: Exception) -> str:
        """The text of a maintenance script's failure, the key named where one
        holds another type."""
        if isinstance(exc, coredis.exceptions.ResponseError):
            return str(_refused(self.name, self._line_keys(), LINE_KINDS, exc))
        return str(exc)

    def _acquire_args(
        self, member: str, limit: int | float, mode: str, returning: Sequence[str]
    ) -> list[str]:
        return [
            member,
            "-1" if limit == math.inf else str(limit),
            repr(self._lease),
            # No rate: a zero spacing, which the GCRA always admits.
            "0" if self._rate is None else repr(self._rate.interval),
            "0" if self._rate is None else repr(self._rate.tolerance),
            mode,
            *returning,
        ]

    async def _ask(self, member: str, limit: int | float, mode: str) -> _Answer:
        """One attempt (``member`` empty: the rate alone), carrying returned tokens."""
        returning = sorted(self._returning)
        args = self._acquire_args(member, limit, mode, returning)
        try:
            reply = await self._acquire_script(keys=self._acquire_keys(), args=args)
        except _REDIS_ERRORS as exc:
            raise BrokerUnavailable(f"rate limiter {self.name!r}: redis unreachable") from exc
        except coredis.exceptions.ResponseError as exc:
            raise _refused(self.name, self._acquire_keys(), ACQUIRE_KINDS, exc) from exc
        answer = self._read_answer(reply)
        self._returning.difference_update(returning)
        return answer

    def _read_answer(self, reply: Sequence[Any]) -> _Answer:
        """The acquire script's reply; raises if it found the GCRA state damaged
        (it wrote nothing then: the tokens to return are still to return)."""
        answer = _answer(reply)
        if answer.refused_by == "damaged":
            raise self._damaged()
        return answer

    def _damaged(self) -> BrokerDataError:
        # The same call fails the same way until someone deletes the key: a
        # worker waits that out (BrokerDataError) rather than crash-loop.
        return BrokerDataError(
            f"rate limiter {self.name!r}: the key {self._key} holds a string, not a finite"
            " number (another program's key under guild's prefix?)"
        )

    async def _maintain(self) -> None:
        """Carry returned tokens back and renew held leases, until cancelled."""
        while True:
            with trio.move_on_after(self._lease / 3):
                await self._maintenance_due.wait()
            self._maintenance_due = trio.Event()
            returning = sorted(self._returning)
            held = list(self._borrowers.values())
            waiting = self._waiting_member or ""
            if not returning and not held and not waiting:
                continue
            try:
                lost = await self._maintain_script(
                    keys=self._line_keys(),
                    args=[repr(self._lease), str(len(returning)), *returning, waiting, *held],
                )
            except _MAINTENANCE_ERRORS as exc:
                # The leases keep running and are renewed or returned on the next
                # round; waiters see the error themselves.
                _log.warning(
                    "ratelimit.maintenance_failed", limiter=self.name, error=self._told(exc)
                )
                continue
            self._returning.difference_update(returning)
            if lost:
                # This process stalled past a lease: others may have taken these
                # tokens, so the bound was not kept for a while. Say so loudly.
                _log.error("ratelimit.leases_lost", limiter=self.name, tokens=len(lost))

    async def _give_everything_back(self) -> None:
        members = sorted(self._returning | set(self._borrowers.values()))
        if self._waiting_member is not None:
            members.append(self._waiting_member)
        self._borrowers.clear()
        self._returning.clear()
        if not members:
            return
        with trio.move_on_after(5) as scope:
            scope.shield = True
            try:
                await self._maintain_script(
                    keys=self._line_keys(),
                    args=[repr(self._lease), str(len(members)), *members, ""],
                )
            except _MAINTENANCE_ERRORS as exc:
                # The leases run out by themselves.
                _log.warning("ratelimit.give_back_failed", limiter=self.name, error=self._told(exc))


def _answer(reply: Sequence[Any]) -> _Answer:
    admitted, kind, wait = reply
    kind = kind.decode() if isinstance(kind, bytes) else str(kind)
    seconds = float(wait)
    return _Answer(
        admitted=int(admitted) == 1,
        refused_by=kind,
        wait=math.inf if seconds < 0 else max(seconds, 1e-3) if kind != "ok" else 0.0,
    )


def _refused(name: str, keys: Sequence[str], kinds: Sequence[str], exc: Exception) -> BrokerError:
    """The error for a script Redis refused: a :class:`BrokerDataError` when a key
    of the limiter's holds another type (another program's key: the same call
    fails until it is deleted, and a worker waits for that rather than crash),
    naming the key; else a :class:`BrokerError`. ``keys`` and ``kinds``: the
    script's keys and the type each must hold."""
    found = _WRONG_TYPE.search(str(exc))
    if found is not None:
        place = int(found.group(1)) - 1  # Lua counts from 1
        if 0 <= place < len(keys):
            return BrokerDataError(
                f"rate limiter {name!r}: the key {keys[place]} holds"
                f" {_a(found.group(2))}, not {_a(kinds[place])}"
                " (another program's key under guild's prefix?)"
            )
    text = f"rate limiter {name!r}: redis refused the script: {exc}"
    if "WRONGTYPE" in str(exc) or type(exc).__name__ == "WrongTypeError":
        return BrokerDataError(text)
    return BrokerError(text)


_WRONG_TYPE = re.compile(r"guild-ratelimit key (\d+) holds (\S+)")
"""The refusal of a script's type check (``_checking_types``)."""

_TYPE_NAMES = {"zset": "sorted set"}


def _a(kind: str) -> str:
    """A Redis type's name as a phrase: ``zset`` is "a sorted set"."""
    return f"a {_TYPE_NAMES.get(kind, kind)}"


class _ReplyError(Exception):
    """Redis answered with an error reply."""


class _BlockingRedis:
    """One blocking connection for the ``*_nowait`` calls, which may not await.

    Speaks just enough RESP2 for AUTH, SELECT, EVALSHA and EVAL.
    """

    def __init__(self, url: str, timeout: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(
                f"redis URL must start redis://, rediss:// or unix://, got {parts.scheme!r}"
            )
        query = parse_qs(parts.query)
        db = query.get("db", [parts.path.strip("/") if parts.scheme != "unix" else ""])[0]
        self._scheme = parts.scheme
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 6379
        self._path = parts.path
        self._db = int(db or 0)
        self._username = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        self._timeout = timeout
        self._url = url
        self._sock: socket.socket | None = None
        self._reader: Any = None

    def evalsha(self, script: str, keys: list[str], args: list[str]) -> Any:
        sha = hashlib.sha1(script.encode()).hexdigest()
        try:
            return self._call("EVALSHA", sha, str(len(keys)), *keys, *args)
        except _ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            return self._call("EVAL", script, str(len(keys)), *keys, *args)

    def close(self) -> None:
        if self._sock is not None:
            self._reader.close()
            self._sock.close()
            self._sock = None

    def _call(self, *words: str) -> Any:
        try:
            if self._sock is None:
                self._connect()
            assert self._sock is not None
            self._sock.sendall(_encode(words))
            return self._read()
        except OSError as exc:
            self.close()
            raise BrokerUnavailable(f"redis at {self._url} is unreachable: {exc}") from exc
        except _ReplyError:
            raise
        except ValueError as exc:
            # A reply we cannot parse leaves the stream out of step: start afresh.
            self.close()
            raise BrokerUnavailable(f"redis at {self._url} sent a malformed reply") from exc

    def _connect(self) -> None:
        if self._scheme == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            sock.connect(self._path)
        else:
            sock = socket.create_connection((self._host, self._port), timeout=self._timeout)
            if self._scheme == "rediss":
                sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self._host)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        self._reader = sock.makefile("rb")
        if self._password is not None:
            auth = [self._username, self._password] if self._username else [self._password]
            self._call("AUTH", *auth)
        if self._db:
            self._call("SELECT", str(self._db))

    def _read(self) -> Any:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionResetError("redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            raise _ReplyError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data: bytes = self._reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self._read() for _ in range(count)]
        raise ConnectionResetError(f"unexpected reply from redis: {line!r}")


def _encode(words: Sequence[str]) -> bytes:
    out = [b"*%d\r\n" % len(words)]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
