"""Wait for a condition that no event announces (another process, a broker's counts)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable

import trio


async def until(check: Callable[[], bool | Awaitable[bool]], interval: float = 0.05) -> None:
    """Return once ``check()`` is true; the caller bounds the wait with ``fail_after``."""
    while True:
        outcome = check()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        await trio.sleep(interval)
