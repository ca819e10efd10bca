"""The loop-stall watchdog: notices a handler that blocks the Trio loop.

A handler that calls ``time.sleep(30)`` or spins the CPU without awaiting stops
every task of its process: other handlers, the claimer, and the lease keeper,
whose renewals then never reach the broker. Past its lease the job is handed to
another worker and runs twice, and nothing says so. Nothing on the loop can
notice (it is the loop that is stuck), so a thread watches it: every
``threshold / 4`` seconds it posts a probe to the loop
(``TrioToken.run_sync_soon``, thread-safe) and, while a probe goes unanswered
for ``threshold`` seconds, reports the stall once.

The rule is :func:`stalled_for`, a pure function of the times involved.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import structlog
import trio

from ._codec import is_positive_seconds

_log = structlog.get_logger("guild")


def stalled_for(pending_since: float | None, now: float, threshold: float) -> float | None:
    """How long the loop has been stalled, once that reaches ``threshold``.

    Args:
        pending_since: when the probe the loop has not answered yet was posted
            (``None``: every probe was answered).
        now: the watchdog's clock now (the same clock as ``pending_since``).
        threshold: seconds a probe may wait before the loop counts as stalled.

    Returns:
        The seconds waited so far, or ``None`` when the loop is not stalled.
    """
    if pending_since is None:
        return None
    waited = now - pending_since
    return waited if waited >= threshold else None


def check_threshold(name: str, value: object) -> None:
    """Refuse a threshold that is not a positive finite number of seconds (or None)."""
    if value is not None and not is_positive_seconds(value):
        raise ValueError(f"{name} must be a positive number of seconds or None, got {value!r}")


class LoopWatchdog:
    """A thread that reports, once per stall, a Trio loop blocked for ``threshold`` s.

    Args:
        threshold: seconds a probe may go unanswered.
        on_stall: called on the watchdog's thread, while the loop is still
            blocked, with the seconds it has been stalled.
        clock: the watchdog's clock (``time.monotonic``; real time, whatever
            clock the Trio run uses: a blocked loop is a real-time fault).
    """

    def __init__(
        self,
        threshold: float,
        on_stall: Callable[[float], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        check_threshold("threshold", threshold)
        self._threshold = threshold
        self._on_stall = on_stall
        self._clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # When the unanswered probe was posted; the loop sets it back to None.
        self._pending: float | None = None
        self._reported = False

    def start(self) -> None:
        """Start watching the Trio run this is called from."""
        token = trio.lowlevel.current_trio_token()
        self._thread = threading.Thread(
            target=self._watch, args=(token,), name="guild-loop-watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread (it ends within one check)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _answer(self) -> None:
        # On the loop: it ran, so whatever stall there was is over.
        if self._reported and self._pending is not None:
            _log.info("loop_stall_ended", stalled=round(self._clock() - self._pending, 3))
        self._reported = False
        self._pending = None

    def _watch(self, token: trio.lowlevel.TrioToken) -> None:
        check = self._threshold / 4
        while not self._stop.wait(check):
            pending = self._pending
            if pending is None:
                self._reported = False
                self._pending = self._clock()
                try:
                    token.run_sync_soon(self._answer)
                except trio.RunFinishedError:
                    return
                continue
            stalled = stalled_for(pending, self._clock(), self._threshold)
            if stalled is not None and not self._reported:
                self._reported = True
                try:
                    self._on_stall(stalled)
                except Exception:
                    # A failing report must not end the watch of later stalls.
                    _log.exception("loop_stall_report_failed")
