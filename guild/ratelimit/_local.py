"""RateLimiter: ``trio.CapacityLimiter``'s contract, admitting by rate as well as count.

Theory of operation. Admission needs two things: a free token (fewer than
``total_tokens`` borrowers) and the GCRA's consent (``_gcra.admit``). Waiters
queue FIFO in an ordered dict, and tokens are *handed over*: whoever frees a
token (a release, a raised ``total_tokens``, a cancelled waiter) runs
``_hand_over``, which admits waiters from the head of the queue for as long as
both conditions hold, marks each admitted and wakes it alone. So a release costs
O(1) per admission, whatever the queue's length, and the admitted task already
holds its token when it next runs: nobody can slip in between, and
``*_nowait`` refuses whenever anyone is queued.

When the head is held back by the rate rather than by the count, nothing will
free a token for it, so the head waiter itself sleeps until the GCRA's
``retry_after`` and then hands over again. Exactly one waiter, the head, carries
that deadline; if it leaves, the next head is woken to take the deadline over.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable

import attrs
import trio

from .._errors import RateLimitError
from ..observability._current import emit_here
from ..observability._feature_events import RateLimited
from ._capacity import CapacityInterface
from ._gcra import Rate, admit


@attrs.frozen(kw_only=True)
class RateLimiterStatistics:
    """A snapshot of a limiter (like ``trio.CapacityLimiterStatistics``, plus rate figures)."""

    borrowed_tokens: int
    total_tokens: int | float
    borrowers: list[object]
    tasks_waiting: int
    admitted: int
    waits: int
    waited_seconds: float


def checked_total_tokens(value: object, name: str = "total_tokens") -> int | float:
    """``value`` if it is a valid token count (an int >= 0, or ``math.inf``), else raise.

    Raises:
        TypeError: ``value`` is not an int or ``math.inf`` (floats, bools and
            strings are refused, as ``trio.CapacityLimiter`` refuses them).
        ValueError: ``value`` is a negative int.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value!r}")
        return value
    if isinstance(value, float) and value == math.inf:
        return value
    raise TypeError(f"{name} must be an int or math.inf, got {value!r}")


def checked_hold(seconds: object) -> float:
    """``seconds`` as a float if it is a finite number >= 0, else raise ``ValueError``."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not (0 <= seconds < math.inf)
    ):
        raise ValueError(f"seconds to hold off must be a finite number >= 0, got {seconds!r}")
    return float(seconds)


@attrs.define(eq=False)
class _Waiter:
    """One queued acquire: who it is for, whether it got its token, and its wake-up."""

    borrower: object
    started: float
    wake: trio.Event = attrs.field(factory=trio.Event)
    admitted: bool = False
    # When the head is held back by the rate: when to try again (inf otherwise).
    retry_at: float = math.inf


class RateLimiter(CapacityInterface):
    """At most ``rate`` admissions per ``period`` and at most ``concurrency`` at once.

    Use it where a ``trio.CapacityLimiter`` goes::

        limiter = RateLimiter(50, period=1.0, concurrency=8, burst=5)
        async with limiter:
            await call_the_api()

    Args:
        rate: admissions per period, or ``None`` for no limit on rate (then it
            is a FIFO ``trio.CapacityLimiter`` of ``concurrency`` tokens).
        period: seconds.
        concurrency: holders at once: an int >= 0 (0 starts paused; raise
            ``total_tokens`` to let waiters in), or ``None``/``math.inf`` for no
            limit on count.
        burst: admissions allowed at once after an idle spell.
        on_wait: called with the seconds a task waited, whenever it had to wait
            (metrics hook; must not raise).
        name: the ``limiter`` label of its waits in ``guild_ratelimit_wait_seconds``.
        report: emit a ``rate_limited`` event for each wait to the app whose run
            it happens in (see :mod:`guild.observability._current`); off for
            limiters made per key, whose names would be unbounded.

    Raises:
        TypeError: ``concurrency`` is not an int, ``math.inf`` or ``None``.
        ValueError: ``concurrency`` is negative, or ``rate``/``period``/``burst``
            are out of range.
    """

    def __init__(
        self,
        rate: float | None,
        period: float = 1.0,
        *,
        concurrency: int | float | None = None,
        burst: int = 1,
        on_wait: Callable[[float], None] | None = None,
        name: str = "rate_limiter",
        report: bool = True,
    ) -> None:
        self.name = name
        self._report = report
        self._rate = None if rate is None else Rate(rate=rate, period=period, burst=burst)
        self._total: int | float = (
            math.inf if concurrency is None else checked_total_tokens(concurrency, "concurrency")
        )
        self._borrowers: set[object] = set()
        self._queue: OrderedDict[_Waiter, None] = OrderedDict()
        self._tat = -math.inf
        self._on_wait = on_wait
        self._admitted = 0
        self._waits = 0
        self._waited = 0.0

    def __repr__(self) -> str:
        limit = "no rate" if self._rate is None else f"{self._rate.rate:g}/{self._rate.period:g}s"
        return (
            f"<RateLimiter {limit},"
            f" {len(self._borrowers)}/{self._total} borrowed, {len(self._queue)} waiting>"
        )

    # --- the CapacityLimiter interface -------------------------------------------

    @property
    def total_tokens(self) -> int | float:
        """The concurrency limit (``math.inf`` when only the rate limits).

        Assigning a larger value admits waiters at once (rate permitting); a
        smaller one lets current holders finish and admits no one until the
        borrowers drop below it.
        """
        return self._total

    @total_tokens.setter
    @trio.lowlevel.enable_ki_protection
    def total_tokens(self, value: int | float) -> None:
        self._total = checked_total_tokens(value)
        self._hand_over(None)

    @trio.lowlevel.enable_ki_protection
    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Take a token for ``borrower`` now, or raise ``trio.WouldBlock``.

        Raises:
            RateLimitError: ``borrower`` holds a token already.
            trio.WouldBlock: no token, the rate forbids it, or others are waiting.
        """
        self._check_not_holding(borrower)
        if self._queue or not self._try_take(borrower):
            raise trio.WouldBlock

    @trio.lowlevel.enable_ki_protection
    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a token for ``borrower``, waiting (FIFO) as long as needed.

        Raises:
            RateLimitError: ``borrower`` holds a token already.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            await self._wait_in_line(borrower)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    @trio.lowlevel.enable_ki_protection
    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token; the next waiter gets it at once.

        Raises:
            RateLimitError: ``borrower`` holds no token.
        """
        if borrower not in self._borrowers:
            raise RateLimitError("this borrower does not hold a token of this RateLimiter")
        self._borrowers.remove(borrower)
        self._hand_over(None)

    def is_fresh(self) -> bool:
        """Whether a new limiter of the same settings would decide exactly as this
        one does now: no token held or waited for, and its rate state in the past
        (a full burst recharged, no hold-off pending). Only then can an owner of
        many limiters drop this one without granting its key a fresh burst."""
        return not self._borrowers and not self._queue and self._tat <= trio.current_time()

    def statistics(self) -> RateLimiterStatistics:
        return RateLimiterStatistics(
            borrowed_tokens=len(self._borrowers),
            total_tokens=self._total,
            borrowers=list(self._borrowers),
            tasks_waiting=len(self._queue),
            admitted=self._admitted,
            waits=self._waits,
            waited_seconds=self._waited,
        )

    # --- holding off ------------------------------------------------------------

    async def hold_off(self, seconds: float) -> None:
        """Admit no one for ``seconds`` from now, then go on at the rate (no burst).

        For a server's ``Retry-After``: every waiter, not only the one that was
        told, waits it out. Holders keep their tokens and waiters their places;
        a hold shorter than one already running changes nothing.

        Raises:
            ValueError: ``seconds`` is negative or not finite.
            RateLimitError: the limiter has no rate (only a count) to hold.
        """
        until = trio.current_time() + checked_hold(seconds)
        if self._rate is None:
            raise RateLimitError("a RateLimiter without a rate cannot be held off")
        # The next admission comes at ``until`` (the GCRA admits at tat - tolerance).
        self._tat = max(self._tat, until + self._rate.tolerance)
        # A head asleep until an earlier retry time wakes, is refused, and sleeps
        # again until ``until``: nothing to wake here.
        await trio.lowlevel.checkpoint()

    # --- internals -------------------------------------------------------------

    def _check_not_holding(self, borrower: object) -> None:
        if borrower in self._borrowers:
            raise RateLimitError(
                "this borrower already holds a token of this RateLimiter (acquired twice)"
            )

    def _try_take(self, borrower: object) -> bool:
        """Admit ``borrower`` if a token is free and the rate allows; False otherwise."""
        if len(self._borrowers) >= self._total:
            return False
        if self._rate is not None:
            decision = admit(self._tat, trio.current_time(), self._rate)
            if not decision.admitted:
                return False
            self._tat = decision.tat
        self._borrowers.add(borrower)
        self._admitted += 1
        return True

    def _hand_over(self, me: _Waiter | None) -> None:
        """Admit waiters from the head while tokens and the rate allow.

        ``me`` is the calling waiter, if a waiter calls: it is not woken to learn
        of a deadline it is about to read itself.
        """
        while self._queue:
            head = next(iter(self._queue))
            if not self._try_take(head.borrower):
                if (
                    self._rate is not None
                    and len(self._borrowers) < self._total
                    and head.retry_at == math.inf
                ):
                    # Only the rate holds the head back: it must wake itself then.
                    refusal = admit(self._tat, trio.current_time(), self._rate)
                    head.retry_at = trio.current_time() + refusal.retry_after
                    if head is not me:
                        head.wake.set()
                return
            del self._queue[head]
            head.admitted = True
            head.wake.set()

    async def _wait_in_line(self, borrower: object) -> None:
        me = _Waiter(borrower, trio.current_time())
        self._queue[me] = None
        self._hand_over(me)
        try:
            while not me.admitted:
                if me.retry_at == math.inf:
                    await me.wake.wait()  # the common case: no cancel scope to build
                else:
                    with trio.move_on_at(me.retry_at):
                        await me.wake.wait()
                if not me.admitted:
                    me.wake = trio.Event()
                    me.retry_at = math.inf
                    self._hand_over(me)
        except BaseException:
            if me.admitted:
                # Admitted, then interrupted (KeyboardInterrupt) before returning:
                # the token would be lost, so give it to the next in line.
                self._borrowers.discard(borrower)
            else:
                del self._queue[me]
            self._hand_over(None)
            raise
        self._record_wait(trio.current_time() - me.started)

    def _record_wait(self, waited: float) -> None:
        self._waits += 1
        self._waited += waited
        if self._on_wait is not None:
            self._on_wait(waited)
        if self._report:
            emit_here("rate_limited", RateLimited(limiter=self.name, waited=waited))
