"""The running app's instruments, for code that has no handle on the app.

A :class:`guild.sandbox.Sandbox` or a :class:`guild.ratelimit.RateLimiter` is
made by the user and used from a handler; neither is given the app. While
``Guild.run`` runs, its instruments sit in a context variable that every task
it starts inherits (Trio copies the context into each new task), so those
objects report what they did (``sandbox_ran``, ``rate_limited``) to the app
whose job they ran in. Outside a run there is nobody to tell, and nothing is
emitted.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

from ._events import Instruments

_current: contextvars.ContextVar[Instruments | None] = contextvars.ContextVar(
    "guild_instruments", default=None
)


@contextlib.contextmanager
def instruments_in_context(instruments: Instruments) -> Iterator[None]:
    """Make ``instruments`` the current ones for this task and the tasks it starts."""
    token = _current.set(instruments)
    try:
        yield
    finally:
        _current.reset(token)


def emit_here(name: str, event: object) -> None:
    """Emit ``event`` to the current app's instruments, if any listen for ``name``."""
    instruments = _current.get()
    if instruments is not None and instruments.wants(name):
        instruments.emit(name, event)
