"""The memory broker: in-process, exact, and deterministic under MockClock.

A real, supported backend (for tests, for embedding, for work that may be lost
with the process), not a mock. It keeps the same semantics as the durable
brokers (see ``_protocol``), and its clock is ``trio.current_time`` so leases,
delays and result TTLs follow ``trio.testing.MockClock``.

Theory of operation: each queue has one ordered set of ``(ready_at, id, version)``
per priority level for jobs waiting to be claimed (ready and delayed alike; a claim
takes the ready heads of the levels highest first; see ``_Level``) and one heap of
``(lease_expires, id, version)`` for claimed ones. Entries are never removed
from either in place: a job's ``version`` goes up whenever it moves, and an
entry whose version is stale is skipped when popped. Waiting claimers sleep on
a per-queue event that enqueue/retry/release/requeue set, bounded by the next
time a delay or a lease runs out.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import json
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import attrs
import trio

from .._codec import ROW_FIELDS, BadRow, ResultJSON, encode_payloads, job_from_row
from .._errors import BrokerClosed
from .._exports import publish
from .._job import (
    DeadLetter,
    Delivery,
    Job,
    JobStatus,
    Priority,
    QueueStats,
    Result,
    attempts_allowed,
    make_delivery,
    replace_fields,
    with_attempt,
)
from .._jobinfo import JobInfo, JobProgress
from .._retention import Retention
from ..rollout._lanes import route_jobs
from ._delegate import LedgerDelegate, WorkflowDelegate
from ._ledger import MemoryLedger
from ._memory_prune import Expiries
from ._protocol import check_purge_args
from ._workflow_store import MemoryWorkflows

# Identity tests against a tuple: cheaper than hashing an enum into a set.
_FINISHED = (JobStatus.DONE, JobStatus.DEAD, JobStatus.CANCELLED)


@attrs.define(slots=True)
class _Entry:
    job: Job
    status: JobStatus
    version: int = 0
    receipt: str = ""
    lease_expires: float = 0.0
    ready_at: float = 0.0
    # While in flight, job.attempt is the number of the holder's run; ``started``
    # says whether that run counts yet (see Broker.start). One field to flip,
    # rather than a new Job, keeps a start cheap.
    started: bool = False
    # Its last started run's lease expired (see Delivery.interrupted).
    interrupted: bool = False
    consumer: str = ""
    # A cancel was asked for while its run was going (see Broker.cancel).
    cancel_requested: bool = False
    # Why a raw entry (store_raw_for_test) is no valid job: claim dead-letters it.
    bad: str | None = None
    # A list or dict payload as enqueued (JSON), and whether a claim handed it out:
    # a handler may change the object it is given, and a run again or a dead letter
    # gets the payload as enqueued, as from SQLite or Redis.
    payload_text: str | None = None
    handed: bool = False
    # For job_info: when its last run started, its last error, its last progress.
    started_at: float | None = None
    error: str | None = None
    traceback: str | None = None
    progress: JobProgress | None = None
    # When it finished (done, dead, cancelled): what purge's older_than measures from.
    finished_at: float | None = None


# A finished job's result: (expires, result, text, attempts, queue, finished_at).
# A done job's ``result`` is None until first read (then built from the rest, and
# ``text``, its value's JSON, decoded into it): a tuple of strings and numbers
# only, which the garbage collector stops tracking at its first look, where a
# Result per job would be one more object for each full collection to walk.
_StoredResult = tuple[float, Result | None, ResultJSON | None, int, str, float]

# A done job's record (what job_info answers once it finished), kept apart from the
# entries: (version, finished_at, queue, attempt, max_attempts, priority, enqueued_at,
# not_before, timeout, key, trace_id, payload, started_at, consumer, error, traceback,
# progress). Strings, numbers and None only (the priority as an int, the payload
# None unless Retention.keep_payload, the progress None unless the job reported
# some), so the garbage collector stops tracking it at its first look: a drained
# job leaves no object behind for every full collection to walk, and its entry
# and its Job are freed at its ack instead of copied to drop the payload.
_DoneRecord = tuple[
    int,
    float,
    str,
    int,
    int | None,
    int,
    float,
    float | None,
    float | None,
    str | None,
    str,
    object,
    float | None,
    str,
    str | None,
    str | None,
    JobProgress | None,
]


_Waiting = tuple[float, str, int]


@attrs.define(slots=True)
class _Level:
    """One priority level's waiting jobs, ``(ready_at, id, version)`` each, claimed
    smallest first from two parts merged at their heads: ``run``, the jobs that were
    ready when they came and came in order (an enqueue's, as a rule: one clock
    reading, ids that sort by creation), and ``heap``, the rest (delayed, retried,
    given back). Taking the run's head costs no comparison; a heap of 50,000 jobs
    cost each claimed job some 16 tuple comparisons, string ones as jobs enqueued
    together share their ready time: a twentieth of the memory broker's drain."""

    heap: list[_Waiting] = attrs.Factory(list)
    run: collections.deque[_Waiting] = attrs.Factory(collections.deque)

    def push(self, item: _Waiting, now: float) -> None:
        run = self.run
        if item[0] <= now and (not run or run[-1] < item):
            run.append(item)
        else:
            heapq.heappush(self.heap, item)

    def next_due(self) -> float:
        """When its first job is ready (``math.inf``: it has none)."""
        due = self.heap[0][0] if self.heap else math.inf
        return min(due, self.run[0][0]) if self.run else due


@attrs.define(slots=True)
class _Queue:
    # The waiting jobs of each priority (Priority.NORMAL's in ``waiting``): a
    # claim drains ``high``, then ``waiting``, then ``low``, so a queue whose
    # jobs all have the default priority pays four empty-container checks for it.
    waiting: _Level = attrs.Factory(_Level)
    high: _Level = attrs.Factory(_Level)
    low: _Level = attrs.Factory(_Level)
    leased: list[tuple[float, str, int]] = attrs.Factory(list)
    wakeup: trio.Event = attrs.Factory(trio.Event)
    done: int = 0
    cancelled: int = 0


class MemoryBroker(LedgerDelegate, WorkflowDelegate):
    """In-process broker.

    Args:
        clock: the clock; ``trio.current_time`` by default (MockClock-friendly).
        key_ttl: seconds an idempotency key holds.
        result_ttl: seconds a result and a finished job's record are kept (the
            older spelling of ``retention=Retention(results=s, done=s)``).
        retention: how long results, finished jobs and dead letters are kept.

    Resource handling: holds nothing but memory; ``aclose`` wakes waiting
    claimers, which then raise :class:`~guild.BrokerClosed`. Finished jobs,
    results, dead letters and idempotency keys are freed when their retention
    runs out (checked at each claim and ack), so memory stays flat under a
    steady load however many jobs pass through.
    """

    def __init__(
        self,
        *,
        clock: Callable[[], float] = trio.current_time,
        key_ttl: float = 86_400.0,
        result_ttl: float | None = None,
        retention: Retention | None = None,
    ) -> None:
        if retention is None:
            retention = Retention()
        if result_ttl is not None:
            retention = attrs.evolve(retention, results=result_ttl, done=result_ttl)
        self._clock = clock
        self._key_ttl = key_ttl
        self._retention = retention
        self._result_ttl = retention.results
        # Seconds a done or cancelled job's record is kept (computed once: it is
        # read for every finished job).
        self._record_ttl = retention.record
        # What is due to be freed, soonest first (see _memory_prune).
        self._expiries = Expiries()
        # Jobs not finished, dead and cancelled ones; done ones are in ``_done``.
        self._entries: dict[str, _Entry] = {}
        self._done: dict[str, _DoneRecord] = {}
        self._queues: dict[str, _Queue] = {}
        self._keys: dict[tuple[str, str], tuple[str, float]] = {}
        # A done job's value is kept as the JSON text acked and decoded when first
        # read: an ack stays as cheap as a durable broker's, and every read gets
        # back what SQLite or Redis would give. Its Result is built when first
        # read, too (see _StoredResult): until then a done job leaves behind no
        # object the garbage collector tracks.
        self._results: dict[str, _StoredResult] = {}
        self._result_events: dict[str, trio.Event] = {}
        self._dead: dict[str, DeadLetter] = {}
        # Ids with a cancel request standing (or stale: checked when read).
        self._cancel_requests: set[str] = set()
        self._receipts = itertools.count(1)
        self._closed = False
        self._ledger: MemoryLedger = MemoryLedger(clock)
        self._workflows: MemoryWorkflows = MemoryWorkflows(clock)
        # Canary rollouts (guild.rollout): queue -> (version, record), and the
        # shares enqueue routes by.
        self.canary_records: dict[str, tuple[int, str]] = {}
        self.canary_shares: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"MemoryBroker(jobs={len(self._entries) + len(self._done)})"

    def now(self) -> float:
        return self._clock()

    @property
    def retention(self) -> Retention:
        """How long this broker keeps what finished jobs leave behind."""
        return self._retention

    # --- helpers ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise BrokerClosed("the memory broker is closed")

    def _queue(self, name: str) -> _Queue:
        queue = self._queues.get(name)
        if queue is None:
            queue = self._queues[name] = _Queue()
        return queue

    def _wake(self, queue: _Queue) -> None:
        queue.wakeup.set()
        queue.wakeup = trio.Event()

    def _make_waiting(
        self, entry: _Entry, ready_at: float, now: float | None = None, wake: bool = True
    ) -> _Queue:
        """Put ``entry`` among its queue's waiting jobs; returns the queue. ``now``:
        the time, when the caller has it; ``wake=False``: the caller wakes the
        queue's claimers itself (once for a batch, rather than an event a job)."""
        entry.version += 1
        entry.receipt = ""
        entry.ready_at = ready_at
        if now is None:
            now = self.now()
        entry.status = JobStatus.DELAYED if ready_at > now else JobStatus.READY
        queue = self._queue(entry.job.queue)
        priority = entry.job.priority
        level = queue.waiting if not priority else queue.high if priority > 0 else queue.low
        level.push((ready_at, entry.job.id, entry.version), now)
        if wake:
            self._wake(queue)
        return queue

    def _holds(self, delivery: Delivery) -> _Entry | None:
        entry = self._entries.get(delivery.job.id)
        if (
            entry is None
            or entry.status is not JobStatus.IN_FLIGHT
            or entry.receipt != delivery.receipt
        ):
            return None
        return entry

    def _finish(self, entry: _Entry, result: Result) -> None:
        """End ``entry`` dead or cancelled, with ``result`` (stamped with the time)."""
        now = result.finished_at
        expires = self._retention.result_expires(now)
        self._results[entry.job.id] = (expires, result, None, 0, "", now)
        self._finished(entry, result.status, now)

    def _finish_done(
        self, entry: _Entry, now: float, attempts: int, text: ResultJSON | None
    ) -> None:
        """End ``entry`` done at ``now``, its value ``text``: its entry goes, a
        ``_DoneRecord`` stays; its Result is made when read."""
        job = entry.job
        job_id, queue = job.id, job.queue
        del self._entries[job_id]
        version = entry.version + 1
        self._results[job_id] = (now + self._result_ttl, None, text, attempts, queue, now)
        self._done[job_id] = (
            version,
            now,
            queue,
            job.attempt,
            job.max_attempts,
            int(job.priority),
            job.enqueued_at,
            job.not_before,
            job.timeout,
            job.key,
            job.trace_id,
            _kept_payload(entry) if self._retention.keep_payload else None,
            entry.started_at,
            entry.consumer,
            entry.error,
            entry.traceback,
            entry.progress,
        )
        self._expiries.add(now + self._record_ttl, job_id, version)
        if self._result_events:
            event = self._result_events.pop(job_id, None)
            if event is not None:
                event.set()

    def _finished(self, entry: _Entry, status: JobStatus, now: float) -> None:
        """End ``entry`` dead or cancelled at ``now`` (a done one: ``_finish_done``)."""
        entry.version += 1
        entry.receipt = ""
        entry.status = status
        entry.finished_at = now
        retention = self._retention
        if status is JobStatus.DEAD:
            self._expiries.add(retention.dead_expires(now), entry.job.id, entry.version)
        else:
            self._expiries.add(now + self._record_ttl, entry.job.id, entry.version)
        event = self._result_events.pop(entry.job.id, None)
        if event is not None:
            event.set()

    def _bury(self, entry: _Entry, error: str, traceback: str | None) -> None:
        if entry.status is JobStatus.IN_FLIGHT and not entry.started:
            entry.job = replace_fields(entry.job, attempt=entry.job.attempt - 1)
        _restore_payload(entry)
        now = self.now()
        entry.error, entry.traceback = error, traceback
        self._dead[entry.job.id] = DeadLetter(
            job=entry.job, error=error, traceback=traceback, died_at=now
        )
        self._finish(
            entry,
            Result(
                job_id=entry.job.id,
                queue=entry.job.queue,
                status=JobStatus.DEAD,
                error=error,
                attempts=entry.job.attempt,
                finished_at=now,
            ),
        )

    def _end_cancelled(self, entry: _Entry) -> None:
        if entry.status is JobStatus.IN_FLIGHT and not entry.started:
            entry.job = replace_fields(entry.job, attempt=entry.job.attempt - 1)
        self._cancel_requests.discard(entry.job.id)
        self._queue(entry.job.queue).cancelled += 1
        self._finish(
            entry,
            Result(
                job_id=entry.job.id,
                queue=entry.job.queue,
                status=JobStatus.CANCELLED,
                error="cancelled",
                attempts=entry.job.attempt,
                finished_at=self.now(),
            ),
        )

    def _expire_leases(self, queue: _Queue, now: float, max_attempts: int) -> None:
        while queue.leased and queue.leased[0][0] <= now:
            _, job_id, version = heapq.heappop(queue.leased)
            entry = self._entries.get(job_id)
            if entry is None or entry.version != version:
                continue
            if entry.cancel_requested:
                self._end_cancelled(entry)
                continue
            if not entry.started:
                entry.job = replace_fields(entry.job, attempt=entry.job.attempt - 1)
            else:
                attempt, allowed = entry.job.attempt, attempts_allowed(entry.job, max_attempts)
                if attempt >= allowed:
                    self._bury(entry, f"lease expired on attempt {attempt} of {allowed}", None)
                    continue
                entry.interrupted = True
            self._make_waiting(entry, now)

    def _next_due(self, queue: _Queue) -> float:
        due = min(queue.high.next_due(), queue.waiting.next_due(), queue.low.next_due())
        if queue.leased:
            due = min(due, queue.leased[0][0])
        return due

    # --- the Protocol ----------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        # Held as objects, but checked as the durable brokers store them, so a
        # payload that would not survive SQLite or Redis is refused here too.
        texts = encode_payloads(jobs)
        jobs = route_jobs(jobs, self.canary_shares)
        stored: list[Job] = []
        woken: dict[str, _Queue] = {}
        for job, text in zip(jobs, texts, strict=True):
            if job.key is not None:
                holder = self._keys.get((job.queue, job.key))
                if holder is not None and holder[1] > now:
                    held = self._entries.get(holder[0])
                    if held is not None:
                        stored.append(held.job)
                        continue
                    record = self._done.get(holder[0])
                    if record is not None:
                        stored.append(_job_of_record(holder[0], record))
                        continue
                self._keys[(job.queue, job.key)] = (job.id, now + self._key_ttl)
                self._expiries.add_key(now + self._key_ttl, job.queue, job.key)
            job = replace_fields(job, enqueued_at=now, attempt=0)
            entry = _Entry(job=job, status=JobStatus.READY)
            if type(job.payload) is dict or type(job.payload) is list:
                entry.payload_text = text
            self._entries[job.id] = entry
            ready_at = now if job.not_before is None else max(now, job.not_before)
            woken[job.queue] = self._make_waiting(entry, ready_at, now, wake=False)
            stored.append(job)
        for queue in woken.values():
            self._wake(queue)
        return stored

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
        await trio.lowlevel.checkpoint()
        self._check_open()
        state = self._queue(queue)
        deadline = self.now() + wait
        started = limit if start is None else start
        while True:
            claimed = self._claim_now(state, consumer, limit, lease, started, max_attempts)
            if claimed:
                return claimed
            now = self.now()
            if now >= deadline:
                return []
            with trio.move_on_at(min(deadline, self._next_due(state))):
                await state.wakeup.wait()
            self._check_open()

    def _claim_now(
        self, queue: _Queue, consumer: str, limit: int, lease: float, start: int, max_attempts: int
    ) -> list[Delivery]:
        now = self.now()
        self._prune(now)
        self._expire_leases(queue, now, max_attempts)
        claimed: list[Delivery] = []
        high, low = queue.high, queue.low
        if high.run or high.heap:
            self._take(queue, high, claimed, consumer, limit, lease, start, now)
        self._take(queue, queue.waiting, claimed, consumer, limit, lease, start, now)
        if low.run or low.heap:
            self._take(queue, low, claimed, consumer, limit, lease, start, now)
        return claimed

    def _take(
        self,
        queue: _Queue,
        level: _Level,
        claimed: list[Delivery],
        consumer: str,
        limit: int,
        lease: float,
        start: int,
        now: float,
    ) -> None:
        """Claim the ready jobs of one priority level into ``claimed``."""
        entries, receipts, leased = self._entries, self._receipts, queue.leased
        heap, run = level.heap, level.run
        expires = now + lease
        count = len(claimed)
        while count < limit:
            # The smaller head of the two parts (see _Level): the order a single
            # heap of them all would give.
            if run and (not heap or run[0] < heap[0]):
                if run[0][0] > now:
                    break
                _, job_id, version = run.popleft()
            elif heap and heap[0][0] <= now:
                _, job_id, version = heapq.heappop(heap)
            else:
                break
            entry = entries.get(job_id)
            if entry is None or entry.version != version:
                continue
            if entry.bad is not None:
                self._bury(entry, entry.bad, None)
                continue
            interrupted = entry.interrupted
            started = count < start and not interrupted
            _restore_payload(entry)
            job = entry.job = with_attempt(entry.job, entry.job.attempt + 1)
            entry.handed = True
            entry.started = started
            if started:
                entry.started_at = now
            entry.consumer = consumer
            entry.version = version = version + 1
            entry.status = JobStatus.IN_FLIGHT
            entry.receipt = receipt = str(next(receipts))
            entry.lease_expires = expires
            heapq.heappush(leased, (expires, job_id, version))
            claimed.append(make_delivery(job, receipt, consumer, expires, started, interrupted))
            count += 1

    async def start(self, deliveries: Sequence[Delivery]) -> list[Delivery]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        return [
            make_delivery(
                delivery.job,
                delivery.receipt,
                delivery.consumer,
                delivery.lease_expires,
                True,
                delivery.interrupted,
            )
            for delivery in deliveries
            if self.start_nowait(delivery)
        ]

    def start_nowait(self, delivery: Delivery) -> bool:
        """:meth:`start` of one delivery without a schedule point, nor a new
        delivery: in memory, the count is made as durable as it can be at once, so
        a worker starts a prefetched job in line (see ``StartsInline``)."""
        self._check_open()
        entry = self._holds(delivery)
        if entry is None:
            return False
        now = self._clock()
        if entry.lease_expires <= now:
            return False
        entry.started = True
        entry.started_at = now
        return True

    async def ack(self, done: Sequence[tuple[Delivery, ResultJSON]]) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        self._prune(now)
        queues = self._queues  # an entry's queue exists: it was made at its enqueue
        entries = self._entries
        for delivery, text in done:
            entry = entries.get(delivery.job.id)
            if entry is None or entry.status in _FINISHED:
                continue
            queues[entry.job.queue].done += 1
            self._finish_done(entry, now, delivery.job.attempt, None if text == "null" else text)

    async def retry(
        self, delivery: Delivery, *, at: float, error: str, traceback: str | None = None
    ) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        entry = self._holds(delivery)
        if entry is not None:
            entry.interrupted = False  # this run finished: it failed, and said so
            entry.error, entry.traceback = error, traceback
            if entry.cancel_requested:
                self._end_cancelled(entry)
            else:
                self._make_waiting(entry, max(at, self.now()))

    async def dead(self, delivery: Delivery, *, error: str, traceback: str | None = None) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        entry = self._holds(delivery)
        if entry is not None:
            self._bury(entry, error, traceback)

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        for delivery in deliveries:
            entry = self._holds(delivery)
            if entry is not None:
                self._give_back(entry)

    async def release_consumers(self, prefix: str) -> int:
        await trio.lowlevel.checkpoint()
        self._check_open()
        held = [
            entry
            for entry in self._entries.values()
            if entry.status is JobStatus.IN_FLIGHT and entry.consumer.startswith(prefix)
        ]
        for entry in held:
            self._give_back(entry)
        return len(held)

    def _give_back(self, entry: _Entry) -> None:
        if entry.cancel_requested:
            self._end_cancelled(entry)
            return
        entry.job = replace_fields(entry.job, attempt=entry.job.attempt - 1)
        self._make_waiting(entry, self.now())

    async def extend(self, deliveries: Sequence[Delivery], *, lease: float) -> list[Delivery]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        renewed: list[Delivery] = []
        for delivery in deliveries:
            entry = self._holds(delivery)
            if entry is None or entry.lease_expires <= now:
                continue
            entry.version += 1
            entry.lease_expires = now + lease
            queue = self._queue(entry.job.queue)
            heapq.heappush(queue.leased, (entry.lease_expires, entry.job.id, entry.version))
            renewed.append(attrs.evolve(delivery, lease_expires=entry.lease_expires))
        return renewed

    async def cancel(self, job_ids: Sequence[str]) -> list[str]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        answered: list[str] = []
        for job_id in job_ids:
            entry = self._entries.get(job_id)
            if entry is None or entry.status in _FINISHED:
                continue
            if entry.status is JobStatus.IN_FLIGHT and entry.started and entry.lease_expires > now:
                entry.cancel_requested = True
                self._cancel_requests.add(job_id)
            else:
                self._end_cancelled(entry)
            answered.append(job_id)
        return answered

    async def cancel_requested(self, job_ids: Sequence[str]) -> set[str]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        if not self._cancel_requests:
            return set()
        for job_id in list(self._cancel_requests):
            entry = self._entries.get(job_id)
            if (
                entry is None
                or entry.status is not JobStatus.IN_FLIGHT
                or not entry.cancel_requested
            ):
                # Its run finished first (an ack or a dead letter): nothing to stop.
                self._cancel_requests.discard(job_id)
        return self._cancel_requests.intersection(job_ids)

    async def finish_cancelled(self, deliveries: Sequence[Delivery]) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        for delivery in deliveries:
            entry = self._holds(delivery)
            if entry is not None:
                self._end_cancelled(entry)

    async def get_result(self, job_id: str, *, wait: float = 0.0) -> Result | None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        found = self._live_result(job_id)
        if found is not None or wait <= 0:
            return found
        event = self._result_events.setdefault(job_id, trio.Event())
        with trio.move_on_after(wait):
            await event.wait()
        return self._live_result(job_id)

    async def get_results(self, job_ids: Sequence[str]) -> dict[str, Result]:
        """The stored results of ``job_ids`` (those with none are left out)."""
        await trio.lowlevel.checkpoint()
        self._check_open()
        found = {job_id: self._live_result(job_id) for job_id in job_ids}
        return {job_id: result for job_id, result in found.items() if result is not None}

    def _live_result(self, job_id: str) -> Result | None:
        stored = self._results.get(job_id)
        if stored is None:
            return None
        expires, result, text, attempts, queue, finished_at = stored
        if expires <= self.now():
            # The record may outlive its result (Retention.done): _prune frees it.
            del self._results[job_id]
            return None
        if result is None or text is not None:
            value = None if text is None else json.loads(text)
            if result is None:
                result = Result(
                    job_id=job_id,
                    queue=queue,
                    status=JobStatus.DONE,
                    value=value,
                    attempts=attempts,
                    finished_at=finished_at,
                )
            else:
                result = attrs.evolve(result, value=value)
            self._results[job_id] = (expires, result, None, attempts, queue, finished_at)
        return result

    async def job_info(self, job_id: str) -> JobInfo | None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        result = self._live_result(job_id)
        entry = self._entries.get(job_id)
        letter = self._dead.get(job_id)
        if entry is None:
            record = self._done.get(job_id)
            if record is not None:
                return _info_of_record(job_id, record, result)
            if letter is None:
                return None
            return _info_of_letter(letter)
        job, status, now = entry.job, entry.status, self.now()
        attempts = job.attempt
        if status in (JobStatus.READY, JobStatus.DELAYED):
            status = JobStatus.DELAYED if entry.ready_at > now else JobStatus.READY
        elif status is JobStatus.IN_FLIGHT and not entry.started:
            attempts -= 1  # a prefetched run is not counted until it starts
        finished_at = None
        if result is not None:
            finished_at = result.finished_at
        elif status is JobStatus.DEAD and letter is not None:
            finished_at = letter.died_at
        return JobInfo(
            id=job.id,
            queue=job.queue,
            status=status,
            attempts=attempts,
            max_attempts=job.max_attempts,
            priority=job.priority,
            enqueued_at=job.enqueued_at,
            not_before=job.not_before,
            started_at=entry.started_at,
            finished_at=finished_at,
            consumer=entry.consumer or None,
            error="cancelled" if status is JobStatus.CANCELLED else entry.error,
            traceback=entry.traceback,
            progress=entry.progress,
            result=result.value if result is not None and result.ok else None,
            trace_id=job.trace_id,
            key=job.key,
        )

    async def set_progress(self, updates: Sequence[tuple[Delivery, JobProgress]]) -> None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        for delivery, progress in updates:
            entry = self._holds(delivery)
            if entry is not None:
                entry.progress = progress

    async def stats(self, queues: Sequence[str] | None = None) -> dict[str, QueueStats]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        names = list(self._queues) if queues is None else list(queues)
        counts = {name: {"ready": 0, "delayed": 0, "in_flight": 0, "dead": 0} for name in names}
        for entry in self._entries.values():
            row = counts.get(entry.job.queue)
            if row is None:
                continue
            if entry.status is JobStatus.IN_FLIGHT:
                if entry.lease_expires <= now:
                    row["ready"] += 1  # an expired lease is claimable again
                else:
                    row["in_flight"] += 1
            elif entry.status in (JobStatus.READY, JobStatus.DELAYED):
                row["delayed" if entry.ready_at > now else "ready"] += 1
        for letter in self._dead.values():
            if letter.job.queue in counts:
                counts[letter.job.queue]["dead"] += 1
        return {
            name: QueueStats(
                queue=name,
                done=self._queues[name].done if name in self._queues else 0,
                cancelled=self._queues[name].cancelled if name in self._queues else 0,
                ready=row["ready"],
                delayed=row["delayed"],
                in_flight=row["in_flight"],
                dead=row["dead"],
            )
            for name, row in counts.items()
        }

    async def list_dead(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        await trio.lowlevel.checkpoint()
        self._check_open()
        letters = [d for d in self._dead.values() if queue is None or d.job.queue == queue]
        letters.sort(key=lambda d: (d.died_at, d.job.id))
        return letters[:limit]

    async def get_dead(self, job_id: str) -> DeadLetter | None:
        await trio.lowlevel.checkpoint()
        self._check_open()
        return self._dead.get(job_id)

    async def requeue_dead(
        self, job_ids: Sequence[str] | None = None, *, queue: str | None = None
    ) -> int:
        await trio.lowlevel.checkpoint()
        self._check_open()
        chosen = list(self._dead) if job_ids is None else [i for i in job_ids if i in self._dead]
        count = 0
        for job_id in chosen:
            letter = self._dead[job_id]
            if queue is not None and letter.job.queue != queue:
                continue
            del self._dead[job_id]
            self._results.pop(job_id, None)
            job = attrs.evolve(letter.job, attempt=0, not_before=None)
            entry = self._entries.get(job_id)
            if entry is None:
                entry = self._entries[job_id] = _Entry(job=job, status=JobStatus.READY)
            entry.job = job
            entry.interrupted = False
            entry.cancel_requested = False
            self._make_waiting(entry, self.now())
            count += 1
        return count

    def _prune(self, now: float) -> None:
        """Free what retention let go of by ``now``: finished jobs' records and
        results, dead letters, idempotency keys. Each is popped once from a heap,
        so the cost is per job freed, not per job held."""
        for job_id, version in self._expiries.due_jobs(now):
            entry = self._entries.get(job_id)
            record = self._done.get(job_id)
            if entry is None:
                if record is not None and record[0] == version:
                    self._forget(job_id)
            elif entry.version == version and entry.status in _FINISHED:
                self._forget(job_id)
            elif record is not None and record[0] == version:
                del self._done[job_id]  # its id was enqueued again since: the old record goes
            # Otherwise it moved on since (requeued, purged): not this expiry's to free.
        for queue, key in self._expiries.due_keys(now):
            holder = self._keys.get((queue, key))
            if holder is not None and holder[1] <= now:
                del self._keys[(queue, key)]

    def _forget(self, job_id: str) -> None:
        self._entries.pop(job_id, None)
        self._done.pop(job_id, None)
        self._results.pop(job_id, None)
        self._dead.pop(job_id, None)
        self._cancel_requests.discard(job_id)

    async def purge(
        self, queue: str, statuses: Collection[JobStatus], *, older_than: float | None = None
    ) -> int:
        """Delete the jobs of ``queue`` in ``statuses`` (see ``guild.brokers.Purgeable``)."""
        check_purge_args(statuses, older_than)
        await trio.lowlevel.checkpoint()
        self._check_open()
        now = self.now()
        cutoff = None if older_than is None else now - older_than
        wanted = set(statuses)
        chosen: list[str] = []
        for job_id, entry in self._entries.items():
            if entry.job.queue != queue:
                continue
            status = entry.status
            if status in (JobStatus.READY, JobStatus.DELAYED):
                status = JobStatus.DELAYED if entry.ready_at > now else JobStatus.READY
                since = entry.job.enqueued_at
            elif status in _FINISHED and entry.finished_at is not None:
                since = entry.finished_at
            else:
                continue
            if status in wanted and (cutoff is None or since <= cutoff):
                chosen.append(job_id)
        for job_id in chosen:
            gone = self._entries.get(job_id)
            if gone is not None:
                gone.version += 1  # its heap entries go stale: never claimed again
            self._forget(job_id)
        if JobStatus.DONE in wanted:
            records = [
                job_id
                for job_id, record in self._done.items()
                if record[2] == queue and (cutoff is None or record[1] <= cutoff)
            ]
            for job_id in records:
                if job_id in self._entries:
                    del self._done[job_id]  # its id was enqueued again: that job stays
                else:
                    self._forget(job_id)
            return len(chosen) + len(records)
        return len(chosen)

    async def store_raw_for_test(self, queue: str, fields: Mapping[str, str | bytes]) -> bool:
        """Store an entry as given, ready now (the ``RawStorable`` test hook).

        The memory broker holds jobs, not text: the entry is read as the durable
        brokers read a stored row, and one that is no valid job is dead-lettered
        by the next claim of ``queue``, with the reason.
        """
        await trio.lowlevel.checkpoint()
        self._check_open()
        found = job_from_row([fields.get(name) for name in ROW_FIELDS], queue=queue)
        job, bad = (found.job, found.reason) if isinstance(found, BadRow) else (found, None)
        entry = _Entry(job=replace_fields(job, queue=queue), status=JobStatus.READY, bad=bad)
        self._entries[job.id] = entry
        self._make_waiting(entry, self.now())
        return True

    async def aclose(self) -> None:
        self._closed = True
        self._ledger.closed = True
        self._workflows.closed = True
        for queue in self._queues.values():
            self._wake(queue)
        for event in self._result_events.values():
            event.set()
        await trio.lowlevel.checkpoint()


def _info_of_letter(letter: DeadLetter) -> JobInfo:
    """A dead job whose record was pruned, from its dead letter."""
    job = letter.job
    return JobInfo(
        id=job.id,
        queue=job.queue,
        status=JobStatus.DEAD,
        attempts=job.attempt,
        max_attempts=job.max_attempts,
        priority=job.priority,
        enqueued_at=job.enqueued_at,
        not_before=job.not_before,
        finished_at=letter.died_at,
        error=letter.error,
        traceback=letter.traceback,
        trace_id=job.trace_id,
        key=job.key,
    )


def _info_of_record(job_id: str, record: _DoneRecord, result: Result | None) -> JobInfo:
    """A done job's ``job_info``, from its record (and its result, while kept)."""
    (_, finished_at, queue, attempt, max_attempts, priority, enqueued_at, not_before, _,
     key, trace_id, _, started_at, consumer, error, traceback, progress) = record  # fmt: skip
    return JobInfo(
        id=job_id,
        queue=queue,
        status=JobStatus.DONE,
        attempts=attempt,
        max_attempts=max_attempts,
        priority=Priority(priority),
        enqueued_at=enqueued_at,
        not_before=not_before,
        started_at=started_at,
        finished_at=None if result is None else finished_at,
        consumer=consumer or None,
        error=error,
        traceback=traceback,
        progress=progress,
        result=result.value if result is not None else None,
        trace_id=trace_id,
        key=key,
    )


def _job_of_record(job_id: str, record: _DoneRecord) -> Job:
    """The job a done record was made from (its payload dropped, unless kept)."""
    (_, _, queue, attempt, max_attempts, priority, enqueued_at, not_before, timeout,
     key, trace_id, payload, *_) = record  # fmt: skip
    return Job(
        queue=queue,
        payload=payload,
        id=job_id,
        attempt=attempt,
        max_attempts=max_attempts,
        enqueued_at=enqueued_at,
        not_before=not_before,
        timeout=timeout,
        key=key,
        trace_id=trace_id,
        priority=priority,
    )


def _kept_payload(entry: _Entry) -> Any:
    """The payload a done job keeps: as enqueued, whatever its handler did to it."""
    text = entry.payload_text
    return entry.job.payload if text is None else json.loads(text)


def _restore_payload(entry: _Entry) -> None:
    """Give ``entry``'s job its list or dict payload as enqueued again once a claim
    has handed it out: the handler given it may have changed it in place."""
    if entry.handed and entry.payload_text is not None:
        entry.job = replace_fields(entry.job, payload=json.loads(entry.payload_text))


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
