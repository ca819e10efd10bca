"""A broker wrapper that fails on cue, for testing workers under broker faults.

Like trio's memory streams with their ``send_all_hook``, :class:`FaultyBroker`
runs a hook before every call it forwards. The hook may sleep (a slow broker),
raise :class:`guild.BrokerUnavailable` (a dropped connection), or do nothing.
Ready-made hooks cover the common cases; any ``async def hook(method: str)``
works.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence

import attrs
import trio

from .._codec import ResultJSON
from .._errors import BrokerUnavailable
from .._job import DeadLetter, Delivery, Job, QueueStats, Result
from .._jobinfo import JobInfo, JobProgress
from ..brokers._protocol import Broker

Hook = Callable[[str], Awaitable[None]]
"""Called with the method name (``"claim"``, ``"ack"``, …) before each forwarded call."""


@attrs.define
class Outage:
    """A hook that makes the broker unreachable between two times (broker clock).

    ``Outage(start=10, end=15, clock=broker.now)``: every call from t=10 to t=15
    raises :class:`guild.BrokerUnavailable`.
    """

    start: float
    end: float
    clock: Callable[[], float] = trio.current_time
    failures: int = 0

    async def __call__(self, method: str) -> None:
        if self.start <= self.clock() < self.end:
            self.failures += 1
            raise BrokerUnavailable(f"injected outage: {method} while the broker is down")


@attrs.define
class RandomFailures:
    """A hook that fails each call with probability ``rate``, from a seeded ``random.Random``."""

    rate: float
    rng: random.Random
    methods: frozenset[str] | None = None
    failures: int = 0

    async def __call__(self, method: str) -> None:
        if (self.methods is None or method in self.methods) and self.rng.random() < self.rate:
            self.failures += 1
            raise BrokerUnavailable(f"injected failure of {method}")


class FaultyBroker:
    """Forwards every call to ``inner`` after running ``hook`` (if set).

    Args:
        inner: the broker that does the work.
        hook: ``async def hook(method_name)``; set or replace it at any time
            through the ``hook`` attribute.

    A failure raised by the hook happens *before* the call, so the inner broker
    never half-applies it: this models a connection that dropped before the
    request went out. (A drop after it went out looks, to the worker, like a
    lease that expired; the lease tests cover that.)
    """

    def __init__(self, inner: Broker, hook: Hook | None = None) -> None:
        self.inner = inner
        self.hook = hook
        self.calls: dict[str, int] = {}

    async def _before(self, method: str) -> None:
        self.calls[method] = self.calls.get(method, 0) + 1
        if self.hook is not None:
            await self.hook(method)

    def now(self) -> float:
        return self.inner.now()

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        await self._before("enqueue")
        return await self.inner.enqueue(jobs)

    async def claim(
        self,
        queue: str,
        *,
        consumer: str,
        limit: int,
        lease: float,
        wait: float = 0.0,
        start: int | None = None,
        max_attempts: int = 5,
    ) -> list[Delivery]:
        await self._before("claim")
        return await self.inner.claim(
            queue,
            consumer=consumer,
            limit=limit,
            lease=lease,
            wait=wait,
            start=start,
            max_attempts=max_attempts,
        )

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        await self._before("start")
        return await self.inner.start(deliveries)

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        await self._before("ack")
        await self.inner.ack(done)

    async def retry(
        self, delivery: Delivery, *, at: float, error: str, traceback: str | None = None
    ) -> None:
        await self._before("retry")
        await self.inner.retry(delivery, at=at, error=error, traceback=traceback)

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        await self._before("dead")
        await self.inner.dead(delivery, error=error, traceback=traceback)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await self._before("release")
        await self.inner.release(deliveries)

    async def release_consumers(self, prefix: str) -> int:
        await self._before("release_consumers")
        return await self.inner.release_consumers(prefix)

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        await self._before("extend")
        return await self.inner.extend(deliveries, lease=lease)

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        await self._before("cancel")
        return await self.inner.cancel(job_ids)

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        await self._before("cancel_requested")
        return await self.inner.cancel_requested(job_ids)

    async def finish_cancelled(self, deliveries: Sequence[Delivery]) -> None:
        await self._before("finish_cancelled")
        await self.inner.finish_cancelled(deliveries)

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        await self._before("get_result")
        return await self.inner.get_result(job_id, wait=wait)

    async def job_info(self, job_id: str) -> JobInfo | None:
        await self._before("job_info")
        return await self.inner.job_info(job_id)

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        await self._before("set_progress")
        await self.inner.set_progress(updates)

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        await self._before("stats")
        return await self.inner.stats(queues)

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        await self._before("list_dead")
        return await self.inner.list_dead(queue, limit=limit)

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        await self._before("get_dead")
        return await self.inner.get_dead(job_id)

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        await self._before("requeue_dead")
        return await self.inner.requeue_dead(job_ids, queue=queue)

    async def aclose(self) -> None:
        await self.inner.aclose()
