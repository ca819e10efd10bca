"""The part of ``trio.CapacityLimiter``'s interface that both limiters spell the
same way: the current-task forms, ``async with``, and the token counts. Each
limiter supplies the ``*_on_behalf_of`` methods, which is where they differ."""

from __future__ import annotations

import abc
from collections.abc import Collection
from types import TracebackType

import trio

from ._gcra import Rate


class CapacityInterface(abc.ABC):
    """A limiter whose borrowers are ``_borrowers``, out of ``_total`` tokens, at ``_rate``."""

    _borrowers: Collection[object]
    _total: int | float
    _rate: Rate | None

    @abc.abstractmethod
    def acquire_on_behalf_of_nowait(self, borrower: object) -> None:
        """Take a token for ``borrower`` now, or raise ``trio.WouldBlock``."""

    @abc.abstractmethod
    async def acquire_on_behalf_of(self, borrower: object) -> None:
        """Take a token for ``borrower``, waiting as long as needed."""

    @abc.abstractmethod
    def release_on_behalf_of(self, borrower: object) -> None:
        """Give back ``borrower``'s token."""

    @property
    def borrowed_tokens(self) -> int:
        """Tokens held by this limiter's borrowers (in this process)."""
        return len(self._borrowers)

    @property
    def available_tokens(self) -> int | float:
        """``total_tokens`` less the tokens this limiter's borrowers hold."""
        return self._total - len(self._borrowers)

    @property
    def rate(self) -> Rate | None:
        """The rate limit, or ``None`` when only the count limits."""
        return self._rate

    def acquire_nowait(self) -> None:
        """Take a token for the current task now, or raise ``trio.WouldBlock``."""
        self.acquire_on_behalf_of_nowait(trio.lowlevel.current_task())

    async def acquire(self) -> None:
        """Take a token for the current task, waiting (FIFO) as long as needed."""
        await self.acquire_on_behalf_of(trio.lowlevel.current_task())

    def release(self) -> None:
        """Give back the current task's token."""
        self.release_on_behalf_of(trio.lowlevel.current_task())

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
