"""The SQLite broker's database thread: one thread of its own, calls handed over a queue.

``trio.to_thread.run_sync`` finds an idle thread in Trio's cache, hands the call
to it and reports back through the run's token; a broker call is a few tens of
microseconds of SQLite, and that hand-off cost about as much again (115 µs of
CPU per call, measured on a loaded 2-core machine, against 57 µs for this
lane). A :class:`Lane` keeps one thread waiting on a ``queue.SimpleQueue`` and
reschedules the waiting task itself: the same two wake-ups, nothing more.

Semantics are ``trio.to_thread.run_sync``'s with ``abandon_on_cancel=False``:
a call cancelled before it is handed over raises ``Cancelled`` and never runs;
once handed over it runs to the end, and its caller gets its outcome (a cancel
meanwhile is delivered at the caller's next checkpoint). Calls run one at a
time, in the order handed over; the broker's ``CapacityLimiter(1)`` says who may
hand one over.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

T = TypeVar("T")

_Call = tuple[Callable[[], Any], trio.lowlevel.Task, trio.lowlevel.TrioToken]


class Lane:
    """One thread running calls handed to it from Trio, one at a time.

    Args:
        name: the thread's name (shown by debuggers and ``py-spy``).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the lane's thread; its value, or what it raised."""
        await trio.lowlevel.checkpoint_if_cancelled()
        self._calls.put((fn, trio.lowlevel.current_task(), trio.lowlevel.current_trio_token()))
        # Not abortable: a call handed over always runs, and its outcome is awaited.
        value: T = await trio.lowlevel.wait_task_rescheduled(lambda _: trio.lowlevel.Abort.FAILED)
        return value

    def close(self) -> None:
        """End the thread once the calls handed over before this have run."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, task, token = call
            result = outcome.capture(fn)
            with contextlib.suppress(trio.RunFinishedError):  # nobody is left to hear it
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)


def hold_if_free(limiter: trio.CapacityLimiter) -> bool:
    """Take ``limiter`` for the current task if it is free (and nobody waits), with
    no schedule point; False if it is not. A :meth:`Lane.run` follows, which is
    the call's checkpoint: ``limiter.acquire()`` would add a pass of the run loop
    to every database call."""
    try:
        limiter.acquire_nowait()
    except trio.WouldBlock:
        return False
    return True
