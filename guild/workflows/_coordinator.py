"""The coordinator: the thin Trio shell that drives stored workflows.

Theory of operation. A workflow is a record in the broker (its spec, its
machine state as JSON, and a version). Everything that changes it follows one
path: read the record, turn what happened (step jobs' results, a cancel
request) into events, apply them with the pure machine, write the new state
with a compare-and-set on the version, and only then act on the decisions
(enqueue step jobs, cancel jobs). A writer that loses the compare-and-set
re-reads and starts over, so two coordinators (every process of an app runs
one) never both apply a transition.

Persist before acting: a crash between the write and the enqueue leaves a
state that says "running" for a step whose job may not exist. So a coordinator
redoes the in-flight work (:func:`~guild.workflows._machine.resume`) of every
workflow whose current version it did not write itself: at its start, and
whenever another process moved a workflow. Re-enqueueing is a no-op where the
job exists, because a step's job has a fixed id and idempotency key; and a
step whose result is stored is never enqueued again, because results are read
(and applied) before in-flight work is redone. So a kill -9 anywhere loses no
step and runs no completed step twice. What remains is the window of every
job: a step's handler that finished but was killed before its ack runs again
(at least once), as any job would.

The coordinator wakes when a worker of this process finishes a workflow's job
(an instrument on the app), and polls every ``poll_interval`` seconds for the
rest (jobs finished by other processes, leases expired, workflows submitted
elsewhere). On the memory broker, which no other process can reach, it does not
poll while no workflow is active: a submit in this process wakes it.
"""

from __future__ import annotations

import contextlib
import math
import sys
import weakref
from collections.abc import Collection, Mapping
from typing import NoReturn

import structlog
import trio

from .._errors import (
    BrokerClosed,
    BrokerDataError,
    BrokerError,
    BrokerUnavailable,
    InvalidWorkflow,
    UnknownWorkflow,
)
from .._job import Job, Result
from .._retention import Retention
from ..brokers._protocol import Broker
from ..observability._events import JobFinished, Outcome, SomeJobsInstrument
from ._expiry import expire, retention_of
from ._machine import ACTIVE_STATUSES, CancelRequested, Finished, apply, resume, start
from ._spec import Workflow, validate
from ._steps import ENVELOPE, workflow_of
from ._store import WorkflowRecord
from ._transition import (
    MAX_RACES,
    Emit,
    Loaded,
    announce,
    events_from,
    execute,
    finished_jobs,
    in_flight,
    load,
    results_of,
    store_of,
    transitions,
)
from ._view import WorkflowView

_log = structlog.get_logger("guild.workflows")

_ACTIVE = sorted(ACTIVE_STATUSES)
_SWEEP_LIMIT = 10_000


# --- the app's calls -------------------------------------------------------------------

# Coordinators by broker object, so that a submit or a finished job in this
# process wakes every coordinator driving the same broker at once.
_coordinators: weakref.WeakKeyDictionary[object, weakref.WeakSet[Coordinator]] = (
    weakref.WeakKeyDictionary()
)


# By broker, then workflow id: set (and dropped) whenever this process writes
# that workflow; what view(wait=...) waits on. One event per workflow, not per
# broker: with a waiter per running workflow (a PM project each), every write
# waking every waiter to re-read its record made the reads grow as the square
# of the workflows in flight, and crowd out the coordinator's own.
_changes: weakref.WeakKeyDictionary[object, dict[str, trio.Event]] = weakref.WeakKeyDictionary()


def _note_change(broker: Broker, workflow_id: str) -> None:
    waiting = _changes.get(broker)
    changed = waiting.pop(workflow_id, None) if waiting is not None else None
    if changed is not None:
        changed.set()


def _wake_all(broker: Broker, workflow_id: str) -> None:
    _note_change(broker, workflow_id)
    for coordinator in list(_coordinators.get(broker, ())):
        coordinator.kick(workflow_id)


async def submit(
    broker: Broker,
    workflow: Workflow,
    known_queues: Collection[str] | None,
    *,
    emit: Emit | None = None,
) -> str:
    """Validate, store and start a workflow; returns its id.

    Submitting the same workflow (same id, same spec) again stores nothing and
    returns the id, so a producer may retry a submit whose answer it lost.

    Raises:
        InvalidWorkflow: the workflow breaks a rule, or another workflow has its id.
        BrokerError: the broker keeps no workflows.
    """
    store = store_of(broker)
    validate(workflow, known_queues)
    now = broker.now()
    state, decisions = start(workflow, now=now)
    spec_text = workflow.to_json()
    record = WorkflowRecord(
        id=workflow.id,
        name=workflow.name,
        status=state.status,
        spec=spec_text,
        state=state.to_json(),
        version=0,
        created_at=now,
        updated_at=now,
    )
    if not await store.create_workflow(record):
        existing = await store.get_workflow(workflow.id)
        if existing is not None and existing.spec == spec_text:
            return workflow.id
        raise InvalidWorkflow(
            "duplicate-id", None, f"a different workflow with id {workflow.id!r} exists"
        )
    loaded = Loaded(record, workflow, state)
    announce(emit, loaded, state, [("submitted", None, None), *transitions([], decisions)], now)
    # Stored first: were this enqueue lost, a coordinator that sees the record
    # (it wrote none of its versions) enqueues the first steps itself.
    await execute(broker, workflow, decisions)
    _wake_all(broker, workflow.id)
    return workflow.id


async def view(broker: Broker, workflow_id: str, *, wait: float = 0.0) -> WorkflowView:
    """The workflow as stored, once it finished or ``wait`` seconds passed.

    A change written in this process wakes the wait at once; one written by
    another process is seen by polling (every 50 ms at first, then up to 1 s).

    Raises:
        UnknownWorkflow: no workflow has this id.
    """
    store = store_of(broker)
    deadline = trio.current_time() + wait
    interval = 0.05
    waiting = _changes.setdefault(broker, {})
    changed = trio.Event()
    try:
        while True:
            # Taken before the read: a change between the read and the wait is not missed.
            changed = waiting.setdefault(workflow_id, trio.Event())
            record = await store.get_workflow(workflow_id)
            if record is None:
                raise UnknownWorkflow(workflow_id)
            remaining = deadline - trio.current_time()
            # The status alone says whether to go on waiting, so the view is
            # built once, on the way out.
            if record.status not in ACTIVE_STATUSES or remaining <= 0:
                return WorkflowView.from_record(record)
            with trio.move_on_after(min(interval, remaining)):
                await changed.wait()
            interval = min(interval * 2, 1.0)
    finally:
        # Dropped by the last waiter to leave, so that a workflow never written
        # again leaves no event behind.
        if waiting.get(workflow_id) is changed and not changed.statistics().tasks_waiting:
            del waiting[workflow_id]


async def views(
    broker: Broker, *, statuses: Collection[str] | None = None, limit: int = 100
) -> list[WorkflowView]:
    """Stored workflows, oldest first; one whose spec or state no coordinator
    wrote is left out (and logged)."""
    records = await store_of(broker).list_workflows(statuses=statuses, limit=limit)
    found = []
    for record in records:
        try:
            found.append(WorkflowView.from_record(record))
        except ValueError as error:
            _log.error("workflow_unreadable", workflow_id=record.id, error=str(error))
    return found


async def cancel(
    broker: Broker, workflow_id: str, reason: str, *, emit: Emit | None = None
) -> bool:
    """Ask a workflow to stop: no new step starts, running ones are cancelled,
    completed ones compensated. False if it had finished (or was stopping) already.

    Raises:
        UnknownWorkflow: no workflow has this id.
    """
    store = store_of(broker)
    for _ in range(MAX_RACES):
        record = await store.get_workflow(workflow_id)
        if record is None:
            raise UnknownWorkflow(workflow_id)
        loaded = load(record)
        event = CancelRequested(reason)
        now = broker.now()
        state, decisions = apply(loaded.spec, loaded.state, event, now=now)
        if state == loaded.state:
            return False
        if await store.update_workflow(
            workflow_id, version=record.version, status=state.status, state=state.to_json()
        ):
            announce(emit, loaded, state, transitions([event], decisions), now)
            await execute(broker, loaded.spec, decisions)
            _wake_all(broker, workflow_id)
            return True
    raise BrokerError(f"workflow {workflow_id!r}: gave up after {MAX_RACES} write conflicts")


# --- the service -----------------------------------------------------------------------


class _Signal(SomeJobsInstrument):
    """Tells the coordinators of a broker that a worker here finished a workflow job.

    It hears only jobs that carry a workflow marker, while a coordinator of the
    broker runs: for every other job a worker builds no ``job_finished`` event
    for it (see ``Instruments.wants_finished``).
    """

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def hears(self, job: Job) -> bool:
        payload = job.payload
        return (
            isinstance(payload, dict)
            and ENVELOPE in payload
            and bool(_coordinators.get(self._broker))
        )

    def job_finished(self, event: JobFinished) -> None:
        if event.outcome in (Outcome.RETRY, Outcome.RELEASED):
            return
        found = workflow_of(event.job)
        if found is not None:
            for coordinator in list(_coordinators.get(self._broker, ())):
                coordinator.job_finished(found[0], event.job.id)


class Coordinator:
    """Drives every active workflow in a broker; one runs inside each ``app.run``.

    Args:
        broker: the broker (it must keep workflows).
        poll_interval: seconds between looks at every active workflow.
        emit: called with each :class:`WorkflowChanged` (the app's instruments).
    """

    def __init__(
        self,
        broker: Broker,
        *,
        poll_interval: float = 1.0,
        emit: Emit | None = None,
        retention: Retention | None = None,
    ) -> None:
        if not (poll_interval > 0 and math.isfinite(poll_interval)):
            raise ValueError(f"poll_interval must be a positive number, got {poll_interval!r}")
        self._broker = broker
        self.retention = retention or retention_of(broker)
        self._store = store_of(broker)
        self.poll_interval = poll_interval
        self._emit = emit
        # The version of each workflow this coordinator wrote (or redid) last: a
        # record at any other version was moved by someone else, whose actions
        # this coordinator cannot know were done.
        self._known: dict[str, int] = {}
        self._specs: dict[str, Workflow] = {}
        # Records whose spec or state cannot be read, by the version that could
        # not: logged once, skipped until someone writes them again.
        self._unreadable: dict[str, int] = {}
        # Workflows whose last look met a damaged broker record (BrokerDataError:
        # a step's queue whose key another program overwrote, say), by what it
        # said: logged once, looked at again each sweep until it is repaired.
        self._damaged: dict[str, str] = {}
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._finished_send, self._finished_receive = trio.open_memory_channel[tuple[str, str]](
            math.inf
        )
        # Looked up, not imported: a process that never made a MemoryBroker
        # (a worker on SQLite or Redis) does not load its module for this.
        memory = sys.modules.get("guild.brokers.memory")
        self._in_process = memory is not None and isinstance(broker, memory.MemoryBroker)
        self.signal = _Signal(broker)

    # --- wake-ups (sync, from this process) -----------------------------------------

    def kick(self, workflow_id: str) -> None:
        """Look at this workflow now."""
        self._dirty.add(workflow_id)
        self._wake.set()

    def job_finished(self, workflow_id: str, job_id: str) -> None:
        """A worker finished one of the workflow's jobs (its result lands with the ack)."""
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._finished_send.send_nowait((workflow_id, job_id))

    # --- the loop --------------------------------------------------------------------

    async def serve(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Drive workflows until cancelled.

        Error handling: a broker outage is waited out (the next look retries); a
        workflow whose record cannot be read is logged once and skipped (one bad
        workflow stays one bad workflow); only ``BrokerClosed`` ends the service.
        """
        _coordinators.setdefault(self._broker, weakref.WeakSet()).add(self)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._await_results)
                nursery.start_soon(self._expire_finished)
                active = await self._sweep()
                task_status.started()
                next_sweep = trio.current_time() + self.poll_interval
                while True:
                    idle = self._in_process and not active and not self._dirty
                    with trio.move_on_at(math.inf if idle else next_sweep):
                        await self._wake.wait()
                    self._wake = trio.Event()
                    if trio.current_time() >= next_sweep or idle:
                        self._dirty.clear()
                        active = await self._sweep()
                        next_sweep = trio.current_time() + self.poll_interval
                    else:
                        dirty, self._dirty = self._dirty, set()
                        for workflow_id in sorted(dirty):
                            await self._drive(workflow_id)
        finally:
            self._finished_send.close()
            _coordinators.get(self._broker, weakref.WeakSet()).discard(self)

    async def _await_results(self) -> None:
        # A job_finished signal comes before the worker's ack stores the result:
        # wait for the result, then look.
        async with trio.open_nursery() as nursery:
            async for workflow_id, job_id in self._finished_receive:
                nursery.start_soon(self._await_result, workflow_id, job_id)

    async def _await_result(self, workflow_id: str, job_id: str) -> None:
        try:
            await self._broker.get_result(job_id, wait=self.poll_interval)
        except BrokerClosed:
            raise
        except BrokerError:
            pass
        self.kick(workflow_id)

    async def _expire_finished(self) -> None:
        # Every process's coordinator runs this; deleting a record twice is a no-op.
        while True:
            await trio.sleep(self.retention.sweep_every)
            try:
                deleted = await expire(self._store, self.retention, self._broker.now())
            except (BrokerUnavailable, BrokerDataError) as error:
                _log.warning("workflow_expiry_failed", error=str(error))
                continue
            if deleted:
                _log.info("workflows_expired", deleted=deleted)

    async def _sweep(self) -> int:
        """Drive every active workflow; returns how many were active."""
        try:
            records = await self._store.list_workflows(statuses=_ACTIVE, limit=_SWEEP_LIMIT)
        except (BrokerUnavailable, BrokerDataError) as error:
            _log.warning("workflow_sweep_failed", error=str(error))
            return len(self._known) or 1
        ids = {record.id for record in records}
        for gone in (set(self._known) | set(self._specs)) - ids:
            self._forget(gone)
        for gone in set(self._unreadable) - ids:
            del self._unreadable[gone]
        for gone in set(self._damaged) - ids:
            del self._damaged[gone]
        # The results of every in-flight job of every active workflow in one
        # round trip (where the broker allows), then only the workflows with
        # something to do are driven: one whose jobs have no result and whose
        # version this coordinator wrote would be read and left as it is.
        flights: dict[str, list[str]] = {}
        for record in records:
            if self._unreadable.get(record.id) == record.version:
                continue
            try:
                flights[record.id] = in_flight(load(record, self._specs))
            except ValueError:
                flights[record.id] = []  # _advance logs it and marks it unreadable
        try:
            results = await results_of(
                self._broker, [job_id for jobs in flights.values() for job_id in jobs]
            )
        except (BrokerUnavailable, BrokerDataError) as error:
            _log.warning("workflow_sweep_failed", error=str(error))
            return len(records) or 1
        for record in records:
            jobs = flights.get(record.id)
            if jobs is None:
                continue
            idle = self._known.get(record.id) == record.version
            if idle and not any(job_id in results for job_id in jobs):
                continue
            await self._drive(record.id, record, results)
        return len(records)

    def _forget(self, workflow_id: str) -> None:
        self._known.pop(workflow_id, None)
        self._specs.pop(workflow_id, None)

    async def _drive(
        self,
        workflow_id: str,
        record: WorkflowRecord | None = None,
        results: Mapping[str, Result] | None = None,
    ) -> None:
        try:
            await self._advance(workflow_id, record, results)
        except BrokerClosed:
            raise
        except BrokerUnavailable as error:
            # Whatever this look did not finish is redone once the broker is back.
            self._forget(workflow_id)
            _log.warning("workflow_broker_unavailable", workflow_id=workflow_id, error=str(error))
        except BrokerDataError as error:
            # Redone each sweep, as for an outage, until the record is repaired;
            # said once (a traceback a second would bury it), naming the record.
            self._forget(workflow_id)
            text = str(error)
            if self._damaged.get(workflow_id) != text:
                self._damaged[workflow_id] = text
                _log.error("workflow_broker_data_damaged", workflow_id=workflow_id, error=text)
        except Exception as error:  # one bad workflow stays one bad workflow
            self._forget(workflow_id)
            _log.exception("workflow_drive_failed", workflow_id=workflow_id, error=repr(error))
        else:
            if self._damaged.pop(workflow_id, None) is not None:
                _log.warning("workflow_broker_data_repaired", workflow_id=workflow_id)

    async def _advance(
        self,
        workflow_id: str,
        record: WorkflowRecord | None,
        results: Mapping[str, Result] | None,
    ) -> None:
        """Apply what happened to one workflow and act on it.

        ``results`` (read after ``record``) stand for its jobs' results on the
        first try; a try that lost the compare-and-set reads both again.
        """
        for _ in range(MAX_RACES):
            if record is None:
                record = await self._store.get_workflow(workflow_id)
            if record is None or record.status not in ACTIVE_STATUSES:
                self._forget(workflow_id)
                return
            if self._unreadable.get(workflow_id) == record.version:
                return
            try:
                loaded = load(record, self._specs)
            except ValueError as error:
                self._unreadable[workflow_id] = record.version
                _log.error("workflow_unreadable", workflow_id=workflow_id, error=str(error))
                return
            self._unreadable.pop(workflow_id, None)
            redo = self._known.get(workflow_id) != record.version
            if results is None:
                events = await finished_jobs(self._broker, loaded)
            else:
                events = events_from(loaded, results)
                results = None
            now = self._broker.now()
            state, decisions = loaded.state, []
            for event in events:
                state, more = apply(loaded.spec, state, event, now=now)
                decisions += more
            version = record.version
            if state != loaded.state:
                if not await self._store.update_workflow(
                    workflow_id, version=version, status=state.status, state=state.to_json()
                ):
                    record = None  # someone else moved it: read it (and results) again
                    continue
                version += 1
                _note_change(self._broker, workflow_id)
                announce(self._emit, loaded, state, transitions(events, decisions), now)
            if redo:
                decisions = [
                    *resume(loaded.spec, state),
                    *(d for d in decisions if isinstance(d, Finished)),
                ]
            # Forgotten until the actions are done: were they cut short, the next
            # look redoes them.
            self._forget(workflow_id)
            await execute(self._broker, loaded.spec, decisions)
            if state.finished:
                return
            self._known[workflow_id] = version
            self._specs[workflow_id] = loaded.spec
            return
        _log.warning("workflow_write_conflicts", workflow_id=workflow_id, tries=MAX_RACES)
