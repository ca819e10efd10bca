"""A memory channel's core, for the worker's two per-job hand-offs.

The worker hands every job on twice: claimer to handler, handler to acker. A
``trio`` memory channel costs about a microsecond for a send and a receive (a
dozen attribute reads, a ``max`` for its statistics, a comparison with its
infinite buffer size), twice a job: a twentieth of the memory broker's drain. A
:class:`Box` keeps what the worker uses of one, scheduled the same way: a put
hands its item straight to the taker that has waited longest and wakes it in the
same scheduling round; with none waiting, the item is buffered (without bound).
Like a channel's, its methods are protected from ``KeyboardInterrupt`` (Trio's
flag on their code, not a wrapper: free per call), so a Ctrl-C cannot land
between taking a waiting task and waking it.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import outcome
import trio

T = TypeVar("T")


class Box(Generic[T]):
    """An unbounded channel within one Trio run: any number of putters and takers."""

    __slots__ = ("_closed", "_items", "_takers")

    def __init__(self) -> None:
        self._items: collections.deque[T] = collections.deque()
        # Takers waiting, longest first (only ever while nothing is buffered).
        self._takers: collections.deque[trio.lowlevel.Task] = collections.deque()
        self._closed = False

    @trio.lowlevel.enable_ki_protection
    def put(self, item: T) -> None:
        """Hand ``item`` to the longest-waiting taker, else buffer it.

        Raises:
            trio.ClosedResourceError: the box was closed.
        """
        if self._takers:
            trio.lowlevel.reschedule(self._takers.popleft(), outcome.Value(item))
        elif self._closed:
            raise trio.ClosedResourceError("the box is closed")
        else:
            self._items.append(item)

    @trio.lowlevel.enable_ki_protection
    def poll(self) -> T | None:
        """The oldest buffered item, or ``None`` when none is (a box's items are
        never ``None``). No exception for an empty box: the worker's hand-offs
        find one empty about once for every two jobs, and raising and catching
        ``trio.WouldBlock`` costs more than the hand-off itself.

        Raises:
            trio.EndOfChannel: none is buffered and the box is closed.
        """
        if self._items:
            return self._items.popleft()
        if self._closed:
            raise trio.EndOfChannel
        return None

    @trio.lowlevel.enable_ki_protection
    async def get(self) -> T:
        """The oldest buffered item, or else the next one put; a checkpoint
        either way, as ``MemoryReceiveChannel.receive`` is.

        Raises:
            trio.EndOfChannel: the box is closed and empty.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._items:
            item = self._items.popleft()
            await trio.lowlevel.cancel_shielded_checkpoint()
            return item
        if self._closed:
            raise trio.EndOfChannel
        task = trio.lowlevel.current_task()
        self._takers.append(task)

        def abort(_: object) -> trio.lowlevel.Abort:
            self._takers.remove(task)
            return trio.lowlevel.Abort.SUCCEEDED

        got: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return got

    @trio.lowlevel.enable_ki_protection
    def close(self) -> None:
        """No more puts: waiting takers (and later ones, once the buffer is
        empty) get ``trio.EndOfChannel``."""
        self._closed = True
        while self._takers:
            trio.lowlevel.reschedule(self._takers.popleft(), outcome.Error(trio.EndOfChannel()))

    def buffered(self) -> int:
        """Items put and not yet taken."""
        return len(self._items)

    def idle_takers(self) -> int:
        """Takers that would wait now: those waiting, less the items buffered
        (which they take first)."""
        return max(0, len(self._takers) - len(self._items))
