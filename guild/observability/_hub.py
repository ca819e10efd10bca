"""The event hub: runtime events as JSON messages, fanned out to ``/events`` clients.

Each subscriber gets a bounded Trio memory channel. The hub only ever calls
``send_nowait``: a worker emitting an event never waits for a client. A client
whose buffer is full is too slow to keep up; it is dropped rather than allowed
to slow the workers or to grow memory without bound: its channel is closed
(it may still read what was buffered) and its scope gets a deadline
``drop_grace`` seconds away, which frees a reader stuck on a client that
stopped reading its socket. Messages reach each client in the order they were
emitted.

Messages are dicts ready for ``json.dumps``; each has ``type`` (``job_started``,
``job_finished``, ``job_progress``, ``worker_state``, ``worker_broker``,
``rate_limited``, ``sandbox_ran``, ``workflow``) and ``time`` (Unix time, from the hub's clock). Nothing is built when nobody listens: an attached
hub (:meth:`EventHub.attach`) joins the app's instruments with its first
subscriber and leaves with its last, so while nobody watches the worker does
not even build the events only the hub wants (``job_started``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ._events import Instrument, Instruments, JobFinished, JobStarted, WorkerStateChanged

if TYPE_CHECKING:
    from ._feature_events import (
        JobProgressed,
        RateLimited,
        SandboxRan,
        WorkerBrokerChanged,
        WorkflowChanged,
    )

Message = dict[str, Any]


@attrs.define(eq=False)
class Subscription:
    """One client's feed: read ``receive``; ``dropped`` says the hub gave up on it."""

    receive: trio.MemoryReceiveChannel[Message]
    _send: trio.MemorySendChannel[Message]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    dropped: bool = False


@attrs.frozen(kw_only=True)
class HubStatistics:
    subscribers: int
    dropped: int
    sent: int


class EventHub(Instrument):
    """Fans runtime events out to subscribers without ever blocking the emitter.

    Args:
        buffer: messages a subscriber may lag behind before it is dropped.
        drop_grace: seconds a dropped subscriber's reader gets to finish.
        clock: the ``time`` stamped on messages (default: wall-clock ``time.time``).
    """

    def __init__(
        self,
        *,
        buffer: int = 1024,
        drop_grace: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if buffer < 1:
            raise ValueError(f"buffer must be at least 1, got {buffer}")
        self.buffer = buffer
        self.drop_grace = drop_grace
        self._clock = clock
        self._subscribers: list[Subscription] = []
        self._dropped = 0
        self._sent = 0
        self._instruments: Instruments | None = None
        self._joined = False

    def attach(self, instruments: Instruments) -> None:
        """Listen to ``instruments`` whenever someone is subscribed (only then)."""
        self._instruments = instruments
        self._rejoin()

    def _rejoin(self) -> None:
        if self._instruments is None:
            return
        wanted = bool(self._subscribers)
        if wanted and not self._joined:
            self._instruments.add(self)
        elif self._joined and not wanted:
            self._instruments.remove(self)
        self._joined = wanted

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        """Receive messages for the ``with`` block; run the reader inside ``scope``."""
        send, receive = trio.open_memory_channel[Message](self.buffer)
        subscription = Subscription(receive=receive, send=send)
        self._subscribers.append(subscription)
        self._rejoin()
        try:
            yield subscription
        finally:
            self._forget(subscription)
            send.close()
            receive.close()

    def _forget(self, subscription: Subscription) -> None:
        if subscription in self._subscribers:
            self._subscribers.remove(subscription)
            self._rejoin()

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            subscribers=len(self._subscribers), dropped=self._dropped, sent=self._sent
        )

    def publish(self, message: Message) -> None:
        """Send ``message`` to every subscriber that has room; drop those that have none."""
        for subscription in list(self._subscribers):
            try:
                subscription._send.send_nowait(message)
            except trio.WouldBlock:
                self._drop(subscription)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                self._forget(subscription)
            else:
                self._sent += 1

    def _drop(self, subscription: Subscription) -> None:
        self._forget(subscription)
        self._dropped += 1
        subscription.dropped = True
        subscription._send.close()
        subscription.scope.deadline = min(
            subscription.scope.deadline, trio.current_time() + self.drop_grace
        )

    # --- instrument hooks ----------------------------------------------------

    def job_started(self, event: JobStarted) -> None:
        if self._subscribers:
            job = event.job
            self.publish(
                {
                    "type": "job_started",
                    "time": self._clock(),
                    "worker": event.worker,
                    "task_id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "trace_id": job.trace_id,
                }
            )

    def job_finished(self, event: JobFinished) -> None:
        if self._subscribers:
            job = event.job
            self.publish(
                {
                    "type": "job_finished",
                    "time": self._clock(),
                    "worker": event.worker,
                    "task_id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "outcome": event.outcome.value,
                    "duration": event.duration,
                    "error": event.error,
                }
            )

    def job_progress(self, event: JobProgressed) -> None:
        if self._subscribers:
            job = event.job
            self.publish(
                {
                    "type": "job_progress",
                    "time": self._clock(),
                    "worker": event.worker,
                    "task_id": job.id,
                    "queue": job.queue,
                    "attempt": job.attempt,
                    "fraction": event.fraction,
                    "message": event.message,
                }
            )

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        if self._subscribers:
            self.publish(
                {
                    "type": "worker_state",
                    "time": self._clock(),
                    "worker": event.worker,
                    "state": event.state,
                    "detail": event.detail,
                    "restarts_in_period": event.restarts_in_period,
                    "last_error": event.last_error,
                }
            )

    def worker_broker_changed(self, event: WorkerBrokerChanged) -> None:
        if self._subscribers:
            self.publish(
                {
                    "type": "worker_broker",
                    "time": self._clock(),
                    "worker": event.worker,
                    "queue": event.queue,
                    "error": event.error,
                }
            )

    def rate_limited(self, event: RateLimited) -> None:
        if self._subscribers:
            self.publish(
                {
                    "type": "rate_limited",
                    "time": self._clock(),
                    "limiter": event.limiter,
                    "waited": event.waited,
                }
            )

    def workflow_changed(self, event: WorkflowChanged) -> None:
        if self._subscribers:
            self.publish(
                {
                    "type": "workflow",
                    "time": self._clock(),
                    "workflow_id": event.workflow_id,
                    "name": event.name,
                    "status": event.status,
                    "what": event.what,
                    "step": event.step,
                    "detail": event.detail,
                }
            )

    def sandbox_ran(self, event: SandboxRan) -> None:
        if self._subscribers:
            self.publish(
                {
                    "type": "sandbox_ran",
                    "time": self._clock(),
                    "argv": list(event.argv),
                    "exit_code": event.exit_code,
                    "duration": event.duration,
                    "refused_rule": event.refused_rule,
                }
            )
