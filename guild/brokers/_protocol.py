"""The broker Protocol: the only thing a worker knows about storage.

A broker is a small, async, batch-first interface. Three ship with guild
(memory, sqlite, redis); a fourth is done when ``guild.testing.check_broker``
passes against it.

Semantics every broker keeps (the conformance suite checks each):

* **Delivery is at least once.** ``claim`` hands a job to one consumer under a
  lease. Until ``ack``/``retry``/``dead``/``release`` or the lease's expiry no
  other consumer can claim it. An expired lease makes the job claimable again.
* **Attempts are counted when a run starts, not when a job is claimed.** A
  delivery is *started* (``Delivery.started``) once the broker has counted its
  run: ``claim(..., start=n)`` starts the first ``n`` jobs it takes (those go
  straight to free handlers; ``None``, the default, starts them all) and hands
  the rest out prefetched, uncounted; ``start(deliveries)`` counts prefetched
  ones, durably, before their handlers run. ``delivery.job.attempt`` is the
  number of that run either way (the first run is 1). When the lease of a
  started delivery expires (the poison message that kills its worker), that
  attempt stays counted: the job is claimable again, or, when it was the last of
  ``max_attempts``, moved to the dead letters with the reason ``"lease expired
  on attempt N of M"`` at the next claim of its queue. Such a job is
  *interrupted* (``Delivery.interrupted``) until a run of it finishes (``retry``):
  a claim never starts it, whatever ``start`` says, so that its worker can run
  it alone (which job of a dead process killed it is unknown). The lease of an
  unstarted delivery expiring counts nothing. A job whose ``max_attempts`` is ``None``
  takes the ``max_attempts`` of the claim that finds its lease expired (its
  worker's). ``release`` and ``release_consumers`` give jobs back without
  counting their runs.
* **Order.** Within a queue, the ready jobs of a higher ``Job.priority``
  (:class:`~guild.Priority`: ``HIGH`` > ``NORMAL`` > ``LOW``) are claimed before
  any of a lower one; within a priority, jobs are claimed in the order they
  became ready (enqueue time, or ``not_before`` / retry time for delayed ones),
  ties broken by id. A job keeps its priority through delays, retries, releases,
  expired leases and ``requeue_dead``, and a claimed job carries it.
* **Delay.** A job is never claimed before its ``not_before``.
* **Idempotency.** ``enqueue`` of a job with a ``key`` already used on the same
  queue within the broker's key window stores nothing and returns the job that
  holds the key.
* **Stale receipts.** After a lease was lost (expired and re-claimed), the old
  delivery's ``extend``/``retry``/``dead`` do nothing for that job. ``ack`` is by
  job id: a job that finished is done, whoever finishes it.
* **Cancellation.** ``cancel(ids)`` ends a ready or delayed job at once: it is
  never claimed, and its result says ``CANCELLED`` (error ``"cancelled"``). So
  does a job claimed but not started (prefetched; its holder's ``start`` then
  leaves it out) and one whose lease has expired. A job whose run has started
  gets a *cancel request* instead: its holder learns of it from
  ``cancel_requested`` and finishes it with ``finish_cancelled``. Until then the
  job stays in flight, and whatever settles it first wins: an ``ack`` makes it
  done (its run finished before the cancel landed) and a ``dead`` dead, but a
  ``retry``, ``release`` or lease expiry, which would run it again, ends it
  cancelled instead (its started run counted in the result's ``attempts``). A cancelled job is terminal: ``ack``, ``retry`` and ``dead``
  leave it as it is, it is never dead-lettered, and ``requeue_dead`` does not
  see it. ``cancel`` answers the ids it cancelled or requested to cancel;
  unknown and already finished ones are left out. ``stats`` counts cancelled
  jobs per queue (``QueueStats.cancelled``). Nothing of this touches ``claim``
  or ``ack``: a worker asks about its own jobs about twice a second.
* **Inspection.** ``job_info`` reports a job as it is now (see
  :class:`~guild.JobInfo`): ``attempts`` counts started runs, ``error`` and
  ``traceback`` are the last failure's (``retry`` keeps them as ``dead`` does,
  so a retried job still says why its last run failed), ``progress`` the last
  ``set_progress`` of a holder of the job. ``set_progress`` leaves a job alone
  unless the delivery still holds it.
* **Time.** Absolute times are in ``broker.now()``'s clock.
* **One bad job stays one bad job.** ``enqueue`` encodes payloads with
  ``guild._codec.encode_payloads``: a payload JSON cannot encode raises
  :class:`~guild.PayloadEncodeError` and nothing of that call is stored.
  ``ack`` takes results the worker already encoded (``encode_result``), so it
  never fails for one job's value. ``claim`` never raises for stored data: an
  entry that cannot become a valid ``Job`` (``job_from_row`` returns a
  ``BadRow``) goes to the dead letters with the reason, naming each wrong field,
  and the rest of the batch is handed out; a payload that is not JSON comes out
  as :class:`~guild.UndecodablePayload`, for the worker to dead-letter.
* **Errors.** Only ``guild`` errors escape: ``BrokerClosed`` after ``aclose``,
  ``BrokerUnavailable`` when the backend cannot be reached.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Literal, Protocol, runtime_checkable

import attrs

from .._codec import ResultJSON
from .._exports import publish
from .._job import DeadLetter, Delivery, Job, JobStatus, QueueStats, Result
from .._jobinfo import JobInfo, JobProgress


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
        """Claim up to ``limit`` ready jobs of ``queue`` for ``lease`` seconds.

        The first ``start`` of them (all when ``None``) come back started, their
        attempt counted; the rest prefetched, to be started with :meth:`start`.
        ``max_attempts`` is the worker's, for jobs that set none, when this call
        finds leases expired. When none is ready, waits up to ``wait`` seconds
        for one (an enqueue, a delay running out or a lease expiring) and
        returns ``[]`` if none came. Always a checkpoint.
        """
        ...

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        """Count the attempt of prefetched deliveries, durably, before their handlers run.

        Returns the deliveries started (``started=True``; a delivery started
        already comes back as it is). A delivery missing from the answer was
        lost (its lease had expired and the job was claimed again or finished):
        its holder must not run it.
        """
        ...

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        """Mark jobs done and store each one's result (kept for the result TTL).

        Each result is JSON text made by ``encode_result``: stored as it is,
        decoded by ``get_result``.
        """
        ...

    async def retry(
        self, delivery: Delivery, *, at: float, error: str, traceback: str | None = None
    ) -> None:
        """Make the job claimable again at ``at``; its attempt has been counted.

        ``error`` and ``traceback`` are kept as the job's last error
        (:meth:`job_info`) until a later failure replaces them."""
        ...

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        """Move the job to the dead letters with its reason; its result says ``DEAD``."""
        ...

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Hand jobs back, ready at once, without counting the attempt (shutdown)."""
        ...

    async def release_consumers(self, prefix: str) -> int:
        """Hand back, as :meth:`release` does, every job held by a consumer whose
        name starts with ``prefix`` (a process that was killed: ``host:pid:``).
        Returns how many."""
        ...

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        """Renew leases to ``now() + lease``; returns the renewed deliveries.

        A delivery missing from the answer was lost (its lease had expired and the
        job was claimed again or finished): its holder should stop counting on it.
        """
        ...

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        """Cancel jobs (see "Cancellation" above): waiting ones at once, running
        ones by a request to their holders. Returns the ids of ``job_ids`` that
        were cancelled or now have a request, in order; unknown ones and ones
        already finished are left out. Asking again for a job with a request
        standing answers it again."""
        ...

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        """Which of ``job_ids`` (jobs the caller holds in flight) have a cancel request.

        Cheap when none has: a worker calls it about twice a second with every
        id it holds."""
        ...

    async def finish_cancelled(self, deliveries: Sequence[Delivery]) -> None:
        """End held jobs as cancelled: terminal, result ``CANCELLED`` with the error
        ``"cancelled"`` and the attempts counted so far; no retry, no dead letter.
        A delivery no longer held (its lease was lost) is left alone, as by ``dead``."""
        ...

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        """The result of a finished job, waiting up to ``wait`` seconds for it."""
        ...

    async def job_info(self, job_id: str) -> JobInfo | None:
        """What is known of one job now (see :class:`~guild.JobInfo`), or ``None``
        when no job has that id (never enqueued, or its record expired).

        ``attempts`` counts started runs; ``started_at`` is its last run's start;
        ``consumer`` the last to claim it; ``error``/``traceback`` the last failure's
        (kept across a retry); ``progress`` the last :meth:`set_progress`;
        ``result`` a done job's value."""
        ...

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        """Store each running job's progress, replacing the one before. A delivery
        no longer held (its lease was lost, or it finished) is left alone."""
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


@runtime_checkable
class StartsInline(Protocol):
    """A broker that can count a start without I/O (optional; the memory broker).

    A worker then starts a prefetched delivery in line, with no schedule point,
    instead of batching starts into one :meth:`Broker.start` call.
    """

    def start_nowait(self, delivery: Delivery) -> bool:
        """:meth:`Broker.start` of one delivery, done at once: whether its run is
        now counted (``False``: its lease ran out, or it is not held by it). No
        delivery is made for it: the worker runs the one it holds, whose
        ``started`` still says what the claim said."""
        ...


@runtime_checkable
class CallsApart(Protocol):
    """A broker whose calls never share a round trip, however close together they
    are made (optional; the Redis broker: each is a script call of its own).

    A worker's acker holding the ack of the one job it holds then sends it at
    once, rather than after one more scheduling round: that round lets a claim
    and starts made meanwhile share the ack's call (SQLite commits them
    together), which here they cannot, and a lone job's round trip would wait
    for it.
    """

    calls_apart: Literal[True]


@runtime_checkable
class EnqueuesAndWaits(Protocol):
    """A broker that enqueues a job and waits for its result in fewer round trips
    than :meth:`Broker.enqueue` then :meth:`Broker.get_result` (optional; the
    Redis broker on one Redis: one round trip). Without it, ``enqueue_and_wait``
    of the app and the clients makes those two calls.
    """

    async def enqueue_and_wait(self, job: Job, *, wait: float) -> tuple[Job, Result | None]:
        """Enqueue ``job`` and wait up to ``wait`` seconds for its result.

        Returns the job as stored (as :meth:`Broker.enqueue` does: for a key
        another job holds, that job) and its result as
        :meth:`Broker.get_result` answers it (``None``: not finished in time).
        A failed enqueue raises at once, without waiting.
        """
        ...


@runtime_checkable
class StopsClaiming(Protocol):
    """A broker whose claims may leave a consumer registered as idle, to be
    handed jobs between claims (optional; the Redis broker).

    A worker calls :meth:`stop_claiming` whenever it stops claiming for a while
    (its capacity is full, or it drains or stops), so that nothing is handed to
    it that it would not take.
    """

    async def stop_claiming(self, queue: str, consumer: str) -> None:
        """End the registration; jobs handed to ``consumer`` and not yet taken by
        a claim go back to ready, their runs not counted."""
        ...


@attrs.frozen(kw_only=True)
class BrokerIssue:
    """Something a broker found wrong with its backend, for ``/health``.

    Attributes:
        name: what it is about (``persistence``, ``eviction``, ``data_loss:<queue>`` …);
            the health check is ``broker:<name>``.
        severity: ``unhealthy``, ``degraded``, or ``info`` (reported, judged healthy).
        detail: what was found, and what it means.
    """

    name: str
    severity: Literal["info", "degraded", "unhealthy"]
    detail: str


@runtime_checkable
class Diagnosable(Protocol):
    """A broker that can check its backend beyond "does it answer" (optional).

    ``/health`` calls :meth:`diagnose` at each request, next to ``stats``.
    """

    async def diagnose(self) -> list[BrokerIssue]:
        """Issues found now (and any not yet acknowledged)."""
        ...

    def acknowledge(self) -> int:
        """Clear the issues that stay until acknowledged (lost data); returns how many."""
        ...


@runtime_checkable
class RawStorable(Protocol):
    """A broker that can store a raw, possibly corrupt entry: the test hook behind
    the conformance check ``bad_stored_entries`` (optional; without it the check
    is skipped).

    Implement it on your own broker to prove that its ``claim`` survives
    whatever its storage may come to hold (a hand-edited row, a half-migrated
    schema, another program writing to the same keys).
    """

    async def store_raw_for_test(self, queue: str, fields: Mapping[str, str | bytes]) -> bool:
        """Store one entry, ready to claim now on ``queue``, exactly as given.

        ``fields`` maps names of ``ROW_FIELDS`` (``id``, ``queue``, ``payload``,
        ``attempt``, ``max_attempts``, ``enqueued_at``, ``not_before``,
        ``timeout``, ``key``, ``trace_id``) to the text (``str``) or raw bytes
        (``bytes``, stored byte for byte, even when not UTF-8) the backend would
        hold in that place; a name left out is stored missing. ``id`` is always
        given and valid. Nothing is checked or converted beyond what the
        backend itself does to stored text (SQLite's column affinity, say).

        Returns False when the backend cannot hold such an entry at all (a SQL
        ``NOT NULL`` column left out): that garbage cannot occur there.
        """
        ...


PURGEABLE: frozenset[JobStatus] = frozenset(
    {JobStatus.READY, JobStatus.DELAYED, JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED}
)
"""Statuses :meth:`Purgeable.purge` takes: all but ``in_flight`` (a job a worker
holds is settled by that worker, or cancelled)."""


@runtime_checkable
class Purgeable(Protocol):
    """A broker that can delete jobs by status (``guild purge``; the three shipped
    brokers are).

    Retention (:class:`~guild.Retention`) deletes finished jobs as they age; a
    purge deletes now, in small batches, so it never holds a backend's write
    lock long (SQLite: under 50 ms a batch), whatever it deletes.
    """

    async def purge(
        self, queue: str, statuses: Collection[JobStatus], *, older_than: float | None = None
    ) -> int:
        """Delete the jobs of ``queue`` in ``statuses`` (a subset of :data:`PURGEABLE`),
        with everything kept for them (result, dead letter, record), and return
        how many. A purged job is gone: ``job_info`` and ``get_result`` answer
        ``None``, ``list_dead`` leaves it out, and a ready one is never claimed.
        The counts of ``stats`` (``done``, ``cancelled``) are totals and stay.

        ``older_than`` (seconds) keeps jobs younger than that: a finished job's
        age runs from when it finished (died, for a dead one), a waiting job's
        from when it was enqueued.

        Raises:
            ValueError: a status outside :data:`PURGEABLE`, or a negative ``older_than``.
        """
        ...


def check_purge_args(statuses: Collection[JobStatus], older_than: float | None) -> None:
    """Raise ``ValueError`` for what :meth:`Purgeable.purge` refuses."""
    wrong = [s.value for s in statuses if s not in PURGEABLE]
    if wrong:
        raise ValueError(
            f"cannot purge status {', '.join(sorted(wrong))}: purge takes "
            + ", ".join(sorted(s.value for s in PURGEABLE))
        )
    if older_than is not None and not older_than >= 0:
        raise ValueError(f"older_than must be seconds >= 0, got {older_than!r}")


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
