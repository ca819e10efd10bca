"""The broker Protocol: the only thing a worker knows about storage.

A broker is a small, async, batch-first interface. Three ship with guild
(memory, sqlite, redis); a fourth is done when ``guild.testing.check_broker``
passes against it.

Semantics every broker keeps (the conformance suite checks each):

* **Delivery is at least once.** ``claim`` hands a job to one consumer under a
  lease. Until ``ack``/``retry``/``dead``/``release`` or the lease's expiry no
  other consumer can claim it. An expired lease makes the job claimable again.
* **Attempts.** Each claim increments ``job.attempt`` (the first claim sees 1).
  A claim that would exceed ``job.max_attempts`` (a job whose leases keep
  expiring: the poison message that kills its worker) moves the job to the dead
  letters with the reason ``"lease expired on attempt N of N"`` instead of
  handing it out. ``release`` gives a job back without counting the attempt.
* **Order.** Within a queue, jobs are claimed in the order they became ready
  (enqueue time, or ``not_before`` / retry time for delayed ones), ties broken by id.
* **Delay.** A job is never claimed before its ``not_before``.
* **Idempotency.** ``enqueue`` of a job with a ``key`` already used on the same
  queue within the broker's key window stores nothing and returns the job that
  holds the key.
* **Stale receipts.** After a lease was lost (expired and re-claimed), the old
  delivery's ``extend``/``retry``/``dead`` do nothing for that job. ``ack`` is by
  job id: a job that finished is done, whoever finishes it.
* **Time.** Absolute times are in ``broker.now()``'s clock.
* **Errors.** Only ``guild`` errors escape: ``BrokerClosed`` after ``aclose``,
  ``BrokerUnavailable`` when the backend cannot be reached.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from .._job import DeadLetter, Delivery, Job, JSONValue, QueueStats, Result


@runtime_checkable
class Broker(Protocol):
    """Storage for jobs, leases, results and dead letters."""

    def now(self) -> float:
        """The broker's clock, in seconds; every absolute time it takes or gives uses it."""
        ...

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        """Store jobs, in order, in one round trip where the backend allows.

        ``job.enqueued_at`` is set by the broker. Returns one job per input: the
        stored job, or, for a duplicate ``key``, the job that already holds it.
        """
        ...

    async def claim(
        self, queue: str, *, consumer: str, limit: int, lease: float, wait: float = 0.0
    ) -> list[Delivery]:
        """Claim up to ``limit`` ready jobs of ``queue`` for ``lease`` seconds.

        When none is ready, waits up to ``wait`` seconds for one (an enqueue, a
        delay running out or a lease expiring) and returns ``[]`` if none came.
        Always a checkpoint.
        """
        ...

    async def ack(self, done: Sequence[tuple[Delivery, JSONValue]]) -> None:
        """Mark jobs done and store each one's result (kept for the result TTL)."""
        ...

    async def retry(self, delivery: Delivery, *, at: float, error: str) -> None:
        """Make the job claimable again at ``at``; its attempt has been counted."""
        ...

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        """Move the job to the dead letters with its reason; its result says ``DEAD``."""
        ...

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hand jobs back, ready at once, without counting the attempt (shutdown)."""
        ...

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        """Renew leases to ``now() + lease``; returns the renewed deliveries.

        A delivery missing from the answer was lost (its lease had expired and the
        job was claimed again or finished): its holder should stop counting on it.
        """
        ...

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        """The result of a finished job, waiting up to ``wait`` seconds for it."""
        ...

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        """Counts per queue (every queue the broker knows when ``queues`` is None)."""
        ...

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Dead letters, oldest first."""
        ...

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        """One dead letter by job id."""
        ...

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        """Move dead jobs back to ready with attempts reset; ``None`` means all
        (of ``queue`` if given). Returns how many were requeued."""
        ...

    async def aclose(self) -> None:
        """Release connections and files. Idempotent."""
        ...
