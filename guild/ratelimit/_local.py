"""RateLimiter: ``trio.CapacityLimiter``'s interface, admitting by rate as well as count.

Theory of operation. Admission needs two things: a free concurrency token (when
``concurrency`` is set) and the GCRA's consent (``_gcra.admit``). Waiters queue
FIFO; only the head of the queue may be admitted, so a burst of late arrivals
can never overtake an earlier waiter, and ``*_nowait`` refuses whenever anyone
is queued. The head sleeps for exactly the GCRA's ``retry_after`` when it is the
rate that holds it back, and on an event when it is the count; every release
and every admission sets that event, so the next head re-checks. A cancelled
waiter removes itself and wakes the one behind it.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from types import TracebackType

import attrs
import trio

from .._errors import RateLimitError
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


class RateLimiter:
    """At most ``rate`` admissions per ``period`` and at most ``concurrency`` at once.

    Use it where a ``trio.CapacityLimiter`` goes::

        limiter = RateLimiter(50, period=1.0, concurrency=8, burst=5)
        async with limiter:
            await call_the_api()

    Args:
        rate: admissions per period.
        period: seconds.
        concurrency: holders at once (``None``: no limit on count).
        burst: admissions allowed at once after an idle spell.
        on_wait: called with the seconds a task waited, whenever it had to wait
            (metrics hook; must not raise).
    """

    def __init__(
        self,
        rate: float,
        period: float = 1.0,
        *,
        concurrency: int | None = None,
        burst: int = 1,
        on_wait: Callable[[float], None] | None = None,
    ) -> None:
        if concurrency is not None and concurrency < 1:
            raise ValueError(f"concurrency must be >= 1 or None, got {concurrency!r}")
        self._rate = Rate(rate=rate, period=period, burst=burst)
        self._total: int | float = math.inf if concurrency is None else concurrency
        self._borrowers: set[object] = set()
        self._queue: deque[object] = deque()
        self._changed = trio.Event()
        self._tat = -math.inf
        self._on_wait = on_wait
        self._admitted = 0
        self._waits = 0
        self._waited = 0.0

    def __repr__(self) -> str:
        return (
            f"<RateLimiter {self._rate.rate:g}/{self._rate.period:g}s,"
            f" {len(self._borrowers)}/{self._total} borrowed, {len(self._queue)} waiting>"
        )

    # --- the CapacityLimiter interface -------------------------------------------

    @property
    def total_tokens(self) -> int | float:
        """The concurrency limit (``math.inf`` when only the rate limits)."""
        return self._total

    @property
    def borrowed_tokens(self) -> int:
        return len(self._borrowers)

    @property
    def available_tokens(self) -> int | float:
        return self._total - len(self._borrowers)

    def acquire_nowait(self) -> None:
        """Take a token for the current task now, or raise ``trio.WouldBlock``."""
        self.acquire_on_behalf_of_nowait(trio.lowlevel.current_task())

    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Take a token for ``borrower`` now, or raise ``trio.WouldBlock``.

        Raises:
            RateLimitError: ``borrower`` holds a token already.
            trio.WouldBlock: no token, the rate forbids it, or others are waiting.
        """
        self._check_not_holding(borrower)
        if self._queue or not self._try_take(borrower):
            raise trio.WouldBlock

    async def acquire(self) -> None:
        """Take a token for the current task, waiting (FIFO) as long as needed."""
        await self.acquire_on_behalf_of(trio.lowlevel.current_task())

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a token for ``borrower``, waiting (FIFO) as long as needed."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            self.acquire_on_behalf_of_nowait(borrower)
        except trio.WouldBlock:
            await self._wait_in_line(borrower)
        else:
            await trio.lowlevel.cancel_shielded_checkpoint()

    def release(self) -> None:
        """Give back the current task's token."""
        self.release_on_behalf_of(trio.lowlevel.current_task())

    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token.

        Raises:
            RateLimitError: ``borrower`` holds no token.
        """
        if borrower not in self._borrowers:
            raise RateLimitError("this borrower does not hold a token of this RateLimiter")
        self._borrowers.remove(borrower)
        self._notify()

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

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    # --- internals -------------------------------------------------------------

    def _check_not_holding(self, borrower: object) -> None:
        if borrower in self._borrowers:
            raise RateLimitError(
                "this borrower already holds a token of this RateLimiter (acquired twice)"
            )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _try_take(self, borrower: object) -> bool:
        """Admit ``borrower`` if a token is free and the rate allows; False otherwise."""
        if len(self._borrowers) >= self._total:
            return False
        decision = admit(self._tat, trio.current_time(), self._rate)
        if not decision.admitted:
            return False
        self._tat = decision.tat
        self._borrowers.add(borrower)
        self._admitted += 1
        return True

    async def _wait_in_line(self, borrower: object) -> None:
        started = trio.current_time()
        self._queue.append(borrower)
        try:
            while True:
                if self._queue[0] is borrower and len(self._borrowers) < self._total:
                    decision = admit(self._tat, trio.current_time(), self._rate)
                    if decision.admitted:
                        break
                    await trio.sleep(decision.retry_after)
                    continue
                await self._changed.wait()
        except BaseException:
            self._queue.remove(borrower)
            self._notify()
            raise
        self._queue.popleft()
        self._try_take(borrower)
        self._notify()
        self._record_wait(trio.current_time() - started)

    def _record_wait(self, waited: float) -> None:
        self._waits += 1
        self._waited += waited
        if self._on_wait is not None:
            self._on_wait(waited)
