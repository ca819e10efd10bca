"""Guild: the application object users build on.

It holds the handler registry (``@app.worker``), runs every worker under one
supervisor (``app.run``), and enqueues from anywhere in the program
(``app.enqueue``). It owns nothing until it runs: the broker, the supervisor and
the workers live inside ``run``'s nursery and are gone when it returns.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import (
    AbstractAsyncContextManager,
    AsyncExitStack,
    asynccontextmanager,
    contextmanager,
)
from typing import TYPE_CHECKING, Any, TypeVar, cast

import attrs
import structlog
import trio

from ._client import client_url, enqueue_jobs, enqueue_one_and_wait, enqueue_options, job_info
from ._errors import BrokerDataError, BrokerUnavailable, GaveUp, GuildError, WorkerEnded
from ._exports import publish
from ._groups import unwrap
from ._handlers import check_handler
from ._job import MAX_QUEUE_NAME, Job, JSONValue, Priority, Result, check_field, check_queue_name
from ._jobinfo import JobInfo
from ._limits import Limit, open_gate
from ._retention import Retention
from ._retry import RetryPolicy
from ._spec import Handler, WorkerSpec
from ._stall import LoopWatchdog, check_threshold
from ._worker import Worker, WorkerStatistics
from .brokers._protocol import Broker
from .brokers._url import open_broker
from .observability._current import instruments_in_context
from .observability._events import Instrument, Instruments, WorkerStateChanged
from .supervision import (
    Backoff,
    ChildEvent,
    ChildSpec,
    Circuit,
    Restart,
    Strategy,
    Supervisor,
)
from .supervision._supervisor import open_services

if TYPE_CHECKING:
    # The schedules load with the first one an app registers (periodic()).
    from ._cron import Schedule
    from .observability._feature_events import WorkflowChanged

    # The coordinator and the workflow machine load when first used: a producer
    # that submits no workflow never builds them, nor does ``run`` while its
    # broker holds no workflow (_serve_workflows).
    from .workflows._spec import Workflow
    from .workflows._store import WorkflowStore
    from .workflows._view import WorkflowView

_log = structlog.get_logger("guild")
_COORDINATOR = "workflow-coordinator"
_PERIODIC = "periodic"
H = TypeVar("H", bound=Handler)


# Classes seen to satisfy the Broker Protocol: ``isinstance(x, Broker)`` walks
# every method of it (several microseconds), and every enqueue asks (_producing).
_BROKER_CLASSES: set[type] = set()


def _utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


class NotRunning(GuildError, RuntimeError):
    """The app was asked for its broker while it is not running and was given none."""


@attrs.frozen(kw_only=True)
class Periodic:
    """A job enqueued on a schedule: once per tick, however many processes run it."""

    name: str
    schedule: Schedule
    queue: str
    payload: JSONValue = None

    def to_json(self, now: dt.datetime) -> dict[str, Any]:
        """This schedule and its next fire after ``now`` (an aware time), ISO 8601
        in the cron's own zone: what ``guild run``'s banner and ``/health`` list."""
        from ._cron import Cron  # loaded already: this schedule is one

        schedule = self.schedule
        fire = schedule.next_fire(now)
        if isinstance(schedule, Cron):
            if schedule.zone is not None:
                fire = fire.astimezone(schedule.zone)
            every: dict[str, Any] = {"cron": schedule.expression, "tz": schedule.tz or "UTC"}
        else:
            every = {"seconds": schedule.seconds}
        return {"name": self.name, "queue": self.queue, **every, "next": fire.isoformat()}


@attrs.frozen(kw_only=True)
class SupervisorOptions:
    """How the app's supervisor treats its workers (OTP intensity + backoff)."""

    strategy: Strategy = Strategy.ONE_FOR_ONE
    # Only real crashes count: a worker whose broker is unreachable waits it out
    # (see guild._outage). Five crashes within 30 s (restarts after 0.5, 1, 2, 4,
    # 8 s) are a crash loop, which OTP would escalate: the supervisor gives up.
    max_restarts: int = 5
    period: float = 30.0
    backoff: Backoff = attrs.Factory(lambda: Backoff(initial=0.5, maximum=10.0))


class Guild:
    """A set of workers, run together under one supervisor.

    Args:
        name: the app's name in logs and metrics.
        broker: a broker (or URL) used when ``run`` and ``enqueue`` are given none.
        instruments: observers of runtime events (metrics, logs, your own).
        supervision: the supervisor's strategy and intensity.
        wall_clock: seconds since the epoch, for periodic schedules
            (``trio.current_time`` makes them follow a MockClock in tests).
        workflow_poll: seconds between the workflow coordinator's looks at
            every active workflow (jobs finished by this process's workers wake
            it at once); ``None`` runs no coordinator in this app.
        retention: how long the broker this app opens keeps results, finished
            jobs and dead letters (:class:`~guild.Retention`; a URL's
            ``result_ttl``/``done_ttl``/``dead_ttl``/``keep_payload`` override
            it). A broker passed open keeps its own.
        loop_stall: seconds the Trio loop may go without running before a
            warning (``loop_stalled``, naming the jobs running then) and the
            ``guild_loop_stalls`` metric say a handler blocked it; ``None``
            runs no watchdog. See docs/workers.md, "A handler that blocks the loop".

    Example::

        app = guild.Guild("demo")

        @app.worker("emails", concurrency=16, timeout=30.0, max_attempts=5)
        async def send(job: guild.Job) -> object:
            ...
    """

    def __init__(
        self,
        name: str = "guild",
        *,
        broker: Broker | str | None = None,
        instruments: Iterable[Instrument] = (),
        supervision: SupervisorOptions | None = None,
        wall_clock: Callable[[], float] = time.time,
        workflow_poll: float | None = 1.0,
        retention: Retention | None = None,
        loop_stall: float | None = 5.0,
    ) -> None:
        if workflow_poll is not None and not (workflow_poll > 0 and math.isfinite(workflow_poll)):
            raise ValueError(
                f"workflow_poll must be a positive number or None, got {workflow_poll!r}"
            )
        self.name = name
        self.workflow_poll = workflow_poll
        self.retention = retention or Retention()
        check_threshold("loop_stall", loop_stall)
        self.loop_stall = loop_stall
        self.instruments = Instruments(instruments)
        self.supervision = supervision or SupervisorOptions()
        self.supervisor: Supervisor | None = None
        self._default_broker = broker
        self._broker: Broker | None = None
        self._wall_clock = wall_clock
        self._periodic: dict[str, Periodic] = {}
        # Why each schedule's last enqueue failed (its queue's key damaged, the
        # broker away), until one goes through: /health's ``periodic`` says it.
        self._periodic_errors: dict[str, str] = {}
        self._lifespans: list[Callable[[Guild], AbstractAsyncContextManager[object]]] = []
        self._specs: dict[str, WorkerSpec] = {}
        self._circuits: dict[str, Circuit | None] = {}
        self._workers: dict[str, Worker] = {}
        self._draining = False
        self._idle: trio.Event | None = None  # made inside run, where a Trio loop exists
        # Set by this app's submit: ends _await_workflow's wait for a first workflow.
        self._workflow_stored: trio.Event | None = None

    def __repr__(self) -> str:
        return f"Guild({self.name!r}, workers={list(self._specs)})"

    # --- registry --------------------------------------------------------------

    def worker(
        self,
        queue: str,
        *,
        name: str | None = None,
        concurrency: int = 16,
        timeout: float | None = 300.0,
        max_attempts: int = 5,
        retry: RetryPolicy | None = None,
        lease: float = 10.0,
        graceful_timeout: float = 30.0,
        dependency_errors: Sequence[type[BaseException]] = (),
        dependency_threshold: int = 5,
        circuit: Circuit | None = None,
        limit: Limit | None = None,
        **options: Any,
    ) -> Callable[[H], H]:
        """Register ``handler`` as the worker for ``queue``.

        Keyword arguments are those of :class:`guild.WorkerSpec`, plus
        ``circuit`` (a :class:`guild.Circuit`) to stop claiming while a
        dependency is down. ``limit`` (a :class:`guild.Limit`) bounds the rate
        and the concurrency of its jobs per key, across processes on Redis.
        """

        def register(handler: H) -> H:
            spec = WorkerSpec(
                queue=queue,
                handler=handler,
                name=name or queue,
                concurrency=concurrency,
                timeout=timeout,
                max_attempts=max_attempts,
                retry=retry or RetryPolicy(),
                lease=lease,
                graceful_timeout=graceful_timeout,
                dependency_errors=tuple(dependency_errors),
                dependency_threshold=dependency_threshold,
                limit=limit,
                **options,
            )
            self.add_worker(spec, circuit=circuit)
            return handler

        return register

    def add_worker(self, spec: WorkerSpec, *, circuit: Circuit | None = None) -> None:
        """Register a worker from a spec (what ``@app.worker`` does).

        Raises:
            InvalidHandler: the handler is not ``async def handler(job)``.
            ValueError: a worker of that name is registered already.
        """
        check_handler(spec.handler)
        if spec.name in self._specs:
            raise ValueError(f"a worker named {spec.name!r} is registered already")
        self._specs[spec.name] = spec
        self._circuits[spec.name] = circuit

    def periodic(
        self,
        schedule: str | float | Schedule,
        queue: str,
        payload: JSONValue = None,
        *,
        name: str | None = None,
    ) -> None:
        """Enqueue ``payload`` on ``queue`` on a schedule.

        Args:
            schedule: a cron expression (``"*/5 * * * *"``, UTC), a number of
                seconds (ticks aligned to the epoch), or a ``Cron``/``Every``;
                ``Cron("0 9 * * 1-5", tz="Europe/Paris")`` runs on a zone's wall
                clock.
            name: the schedule's name; with the tick time it forms the job's
                idempotency key, so every process may run the scheduler and each
                tick is still enqueued once. Default: ``queue``.

        Raises:
            ScheduleError: the expression is not a schedule.
            InvalidQueueName: ``queue`` is not a name a queue may have.
            InvalidField: ``name`` is empty, over 200 characters or holds
                control characters.
            ValueError: a schedule of that name exists already.
        """
        # Here, not at the top: an app without schedules never loads them.
        from ._cron import Cron, Every

        if isinstance(schedule, str):
            schedule = Cron(schedule)
        elif isinstance(schedule, int | float):
            schedule = Every(float(schedule))
        check_queue_name(queue)
        # The name is part of each tick's idempotency key (``tick_key``).
        name = check_field("periodic name", name, MAX_QUEUE_NAME) if name is not None else queue
        if name in self._periodic:
            raise ValueError(f"a periodic schedule named {name!r} exists already")
        self._periodic[name] = Periodic(name=name, schedule=schedule, queue=queue, payload=payload)

    @property
    def specs(self) -> dict[str, WorkerSpec]:
        """The registered workers by name."""
        return dict(self._specs)

    @property
    def schedules(self) -> dict[str, Periodic]:
        """The periodic jobs registered with :meth:`periodic`, by name."""
        return dict(self._periodic)

    def upcoming(self) -> list[dict[str, Any]]:
        """Each periodic job, by name, with its next fire after now by the app's
        ``wall_clock`` (:meth:`Periodic.to_json`): ``/health``'s ``periodic``.
        A schedule whose last enqueue failed has ``error``, saying why."""
        now = _utc(self._wall_clock())
        found = []
        for name, entry in sorted(self._periodic.items()):
            shown = entry.to_json(now)
            error = self._periodic_errors.get(name)
            if error is not None:
                shown["error"] = error
            found.append(shown)
        return found

    def lifespan(
        self, factory: Callable[[Guild], AbstractAsyncContextManager[object]]
    ) -> Callable[[Guild], AbstractAsyncContextManager[object]]:
        """Enter ``factory(app)`` around every run of the app (usable as a decorator).

        What the workers share and must close (an HTTP client, a connection pool)
        opens before the first worker starts and closes after the last one
        stopped, in reverse order of registration.
        """
        self._lifespans.append(factory)
        return factory

    def configure(self, name: str, **changes: Any) -> None:
        """Change a registered worker's options (``concurrency=…`` from the CLI, say).

        Raises:
            InvalidHandler: a new ``handler`` is not ``async def handler(job)``.
        """
        if "handler" in changes:
            check_handler(changes["handler"])
        self._specs[name] = attrs.evolve(self._specs[name], **changes)

    # --- running ---------------------------------------------------------------

    @property
    def broker(self) -> Broker:
        """The broker the app is running on.

        Raises:
            NotRunning: the app is not running and was built without a broker object.
        """
        if self._broker is not None:
            return self._broker
        if isinstance(self._default_broker, Broker):
            return self._default_broker
        raise NotRunning(f"app {self.name!r} is not running and has no broker object")

    def workers(self) -> dict[str, WorkerStatistics]:
        """Live figures of the running workers."""
        return {name: worker.statistics() for name, worker in self._workers.items()}

    def running_jobs(self) -> dict[str, list[tuple[Job, float]]]:
        """Per running worker, the jobs its handlers run now and the seconds each has run."""
        return {name: worker.running_jobs() for name, worker in self._workers.items()}

    async def run(
        self,
        broker: Broker | str | None = None,
        *,
        shutdown_trigger: Callable[[], Awaitable[object]] | None = None,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Run every worker until ``shutdown_trigger`` returns, then drain.

        Works with ``await nursery.start(app.run, broker)`` (started once every
        worker is claiming) and with a plain ``await``.

        Args:
            broker: a Broker, or a URL for :func:`guild.open_broker`; default: the
                app's own, else ``$GUILD_BROKER``.
            shutdown_trigger: awaited; when it returns, the app drains: workers
                stop claiming, running jobs finish within their
                ``graceful_timeout`` and the rest go back to the broker. Default:
                run until cancelled (cancellation hands jobs back too, at once).

        Raises:
            GaveUp: the supervisor's restart intensity was exceeded.
        """
        async with self._using_broker(broker) as opened, AsyncExitStack() as resources:
            for factory in self._lifespans:
                await resources.enter_async_context(factory(self))
            self._broker = opened
            self._draining = False
            self._idle = trio.Event()
            try:
                # The supervisor's nursery wraps its GaveUp in a group; the
                # documented `except guild.GaveUp` must catch it as it is.
                # Every task of the run inherits the instruments: sandboxes and
                # rate limiters a handler uses report to this app (._current).
                with (
                    unwrap(GaveUp),
                    instruments_in_context(self.instruments),
                    self._watching_the_loop(),
                ):
                    await self._supervise(shutdown_trigger, task_status)
            finally:
                self._broker = None
                self.supervisor = None

    @contextmanager
    def _watching_the_loop(self) -> Iterator[None]:
        if self.loop_stall is None:
            yield
            return
        watchdog = LoopWatchdog(self.loop_stall, self._loop_stalled)
        watchdog.start()
        try:
            yield
        finally:
            watchdog.stop()

    def _loop_stalled(self, stalled: float) -> None:
        # On the watchdog's thread, while the loop is blocked: nothing on the
        # loop changes the workers' slots meanwhile, unless the stall ends as
        # they are read (then they are read again, or not named).
        jobs: dict[str, tuple[str, ...]] = {}
        for _ in range(3):
            try:
                jobs = {
                    name: tuple(job.id for job, _ in running)
                    for name, running in self.running_jobs().items()
                    if running
                }
                break
            except RuntimeError:  # changed while read: the loop ran again
                continue
        _log.warning(
            "loop_stalled",
            app=self.name,
            stalled=round(stalled, 3),
            jobs=jobs,
            advice="a handler blocked the event loop (a sync call or CPU loop without"
            " await): its leases cannot be renewed, so its jobs may run twice; move the"
            " blocking work to trio.to_thread.run_sync or guild.Sandbox",
        )
        if self.instruments.wants("loop_stalled"):
            # Here, not at the top: an app whose loop never stalls never builds it.
            from .observability._feature_events import LoopStalled

            self.instruments.emit(
                "loop_stalled", LoopStalled(stalled=stalled, jobs=jobs, at=time.time())
            )

    async def _supervise(
        self,
        shutdown_trigger: Callable[[], Awaitable[object]] | None,
        task_status: trio.TaskStatus[None],
    ) -> None:
        from .workflows._store import WorkflowStore

        options = self.supervision
        supervisor = Supervisor(
            self.name,
            strategy=options.strategy,
            max_restarts=options.max_restarts,
            period=options.period,
            backoff=options.backoff,
            on_event=self._on_child_event,
        )
        self.supervisor = supervisor
        async with trio.open_nursery() as nursery:
            await nursery.start(supervisor.run)
            for spec in self._specs.values():
                await supervisor.start_child(
                    ChildSpec(
                        name=spec.name,
                        start=functools.partial(self._serve_worker, spec),
                        # A worker returns only when drained: that is no reason to restart.
                        restart=Restart.TRANSIENT,
                        circuit=self._circuits[spec.name],
                        shutdown_grace=spec.graceful_timeout + 5.0,
                    )
                )
            if self._periodic:
                await supervisor.start_child(
                    ChildSpec(name=_PERIODIC, start=self._serve_periodic, restart=Restart.TRANSIENT)
                )
            if self.workflow_poll is not None and isinstance(self.broker, WorkflowStore):
                await supervisor.start_child(
                    ChildSpec(
                        name=_COORDINATOR, start=self._serve_workflows, restart=Restart.TRANSIENT
                    )
                )
            task_status.started()
            if shutdown_trigger is None:
                await trio.sleep_forever()
            await shutdown_trigger()
            self.drain()
            await self._wait_drained()
            nursery.cancel_scope.cancel(reason="shutdown")

    @property
    def draining(self) -> bool:
        """True once the app was told to stop claiming."""
        return self._draining

    def drain(self) -> None:
        """Stop claiming everywhere; running jobs finish, then ``run`` returns."""
        self._draining = True
        for worker in self._workers.values():
            worker.drain()
        if not self._workers and self._idle is not None:
            self._idle.set()

    async def _wait_drained(self) -> None:
        if self._workers and self._idle is not None:
            await self._idle.wait()

    async def _serve_worker(
        self, spec: WorkerSpec, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        if self._draining:
            task_status.started()
            return
        async with open_gate(spec.name, spec.limit, self.broker, self.instruments) as gate:
            worker = Worker(spec, self.broker, self.instruments, gate=gate)
            self._workers[spec.name] = worker
            try:
                await worker.serve(task_status=task_status)
            finally:
                del self._workers[spec.name]
                self._note_worker_exit()
        if not worker.draining:
            # Workers are transient: a quiet return would leave the queue with no
            # consumer and nothing restarting one.
            raise WorkerEnded(spec.name)

    def _note_worker_exit(self) -> None:
        if self._draining and not self._workers and self._idle is not None:
            self._idle.set()

    async def _serve_periodic(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Enqueue each schedule's ticks as they come; a tick missed while down is skipped."""
        from ._cron import tick_key  # loaded already: periodic() registered the schedules

        now = self._wall_clock()
        upcoming = {
            name: entry.schedule.next_fire(_utc(now)) for name, entry in self._periodic.items()
        }
        task_status.started()
        while True:
            name, fire_at = min(upcoming.items(), key=lambda item: item[1])
            await trio.sleep(max(0.0, fire_at.timestamp() - self._wall_clock()))
            if self.draining:
                return
            entry = self._periodic[name]
            try:
                await self.enqueue(entry.queue, entry.payload, key=tick_key(name, fire_at))
            except (BrokerUnavailable, BrokerDataError) as error:
                # That tick is skipped, as one missed while down is, and the
                # other schedules go on: a restart would repair neither (a key
                # another program overwrote stays so until someone deletes it).
                self._periodic_failed(entry, error)
            else:
                if self._periodic_errors.pop(name, None) is not None:
                    _log.warning("periodic_enqueue_resumed", schedule=name, queue=entry.queue)
            upcoming[name] = entry.schedule.next_fire(fire_at)

    def _periodic_failed(self, entry: Periodic, error: BrokerUnavailable | BrokerDataError) -> None:
        text = f"{type(error).__name__}: {error}"
        if self._periodic_errors.get(entry.name) != text:
            # Logged once for as long as it fails the same way.
            _log.error(
                "periodic_enqueue_failed", schedule=entry.name, queue=entry.queue, error=text
            )
        self._periodic_errors[entry.name] = text

    async def _serve_workflows(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the broker's workflows (see guild.workflows._coordinator).

        The coordinator, and the workflow machine it is built on, load once the
        broker holds a workflow (see :meth:`_await_workflow`): a worker whose
        broker holds none reaches its first job without building them.
        """
        if await self._await_workflow(task_status):
            task_status = trio.TASK_STATUS_IGNORED
        from .workflows._coordinator import Coordinator

        coordinator = Coordinator(
            self.broker, poll_interval=self.workflow_poll or 1.0, emit=self._workflow_changed
        )
        self.instruments.add(coordinator.signal)
        try:
            await coordinator.serve(task_status=task_status)
        finally:
            self.instruments.remove(coordinator.signal)

    async def _await_workflow(self, task_status: trio.TaskStatus[None]) -> bool:
        """Return once the broker holds a workflow; True if ``task_status`` was told.

        It looks every ``workflow_poll`` seconds, the pace at which the coordinator
        looks for workflows stored by other processes; a submit from this app ends
        the wait at once. The memory broker, which no other process reaches, ends it
        at once: its coordinator does not poll, and a submit wakes it.
        """
        memory = sys.modules.get("guild.brokers.memory")
        if memory is not None and isinstance(self.broker, memory.MemoryBroker):
            return False
        store = cast("WorkflowStore", self.broker)
        self._workflow_stored = stored = trio.Event()
        told = False
        try:
            while not stored.is_set():
                try:
                    if await store.list_workflows(limit=1):
                        break
                except BrokerUnavailable as error:
                    # Waited out, as the coordinator's own sweep does.
                    _log.warning("workflow_sweep_failed", error=str(error))
                if not told:
                    task_status.started()
                    told = True
                with trio.move_on_after(self.workflow_poll or 1.0):
                    await stored.wait()
        finally:
            self._workflow_stored = None
        return told

    def _workflow_changed(self, event: WorkflowChanged) -> None:
        if self.instruments.wants("workflow_changed"):
            self.instruments.emit("workflow_changed", event)

    def _on_child_event(self, event: ChildEvent) -> None:
        # The coordinator and the scheduler are services, not workers: /health
        # and the metrics would judge them by claims they never make (and find
        # no worker task for them: "not running").
        service = event.child in (_COORDINATOR, _PERIODIC)
        self._emit_child(
            "service_state_changed" if service else "worker_state_changed",
            event,
        )

    def _on_service_event(self, event: ChildEvent) -> None:
        self._emit_child("service_state_changed", event)

    def _emit_child(self, hook: str, event: ChildEvent) -> None:
        if self.instruments.wants(hook):
            self.instruments.emit(
                hook,
                WorkerStateChanged(
                    worker=event.child,
                    state=event.state,
                    at=event.at,
                    detail=event.detail,
                    restarts_in_period=event.restarts_in_period,
                    last_error=event.last_error,
                ),
            )

    @asynccontextmanager
    async def open_services(self) -> AsyncIterator[Supervisor]:
        """A supervisor for a run's system tasks, the ones beside the workers.

        ``guild run`` starts its HTTP server, its rollout recorder and a canary's
        controller in it (``supervisor.start_child(ChildSpec(...))``): one that
        crashes is restarted with the app's backoff and counted against the
        app's intensity (:class:`SupervisorOptions`), its cause logged
        (``child_crashed``) and its restarts counted
        (``guild_service_restarts``), instead of ending every worker of the run.
        A crash loop past the intensity raises :class:`GaveUp`, as a worker's does.
        Leaving the block stops the services, latest started first.
        """
        options = self.supervision
        async with open_services(
            f"{self.name}.services",
            max_restarts=options.max_restarts,
            period=options.period,
            backoff=options.backoff,
            on_event=self._on_service_event,
        ) as supervisor:
            yield supervisor

    @asynccontextmanager
    async def _using_broker(self, broker: Broker | str | None) -> AsyncIterator[Broker]:
        chosen = broker if broker is not None else self._default_broker
        if isinstance(chosen, Broker):
            yield chosen
            return
        async with open_broker(chosen, retention=self.retention) as opened:
            yield opened

    @asynccontextmanager
    async def open(self, broker: Broker | str | None = None) -> AsyncIterator[Guild]:
        """Run the app in a nursery of its own for the ``async with`` block.

        Leaving the block drains the app (running jobs finish within their grace).
        """
        leave = trio.Event()
        async with trio.open_nursery() as nursery:
            await nursery.start(functools.partial(self.run, broker, shutdown_trigger=leave.wait))
            try:
                yield self
            finally:
                leave.set()

    # --- producing -------------------------------------------------------------

    async def enqueue(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
        broker: Broker | str | None = None,
    ) -> Job:
        """Enqueue one job and return it (for a duplicate ``key``: the job that holds it).

        Works outside :meth:`run` too: see :meth:`enqueue_many` for the broker used.
        ``priority`` (a :class:`~guild.Priority`, its int or its name): claimed
        before the waiting jobs of lower priority on its queue, in order within
        its level.
        """
        (job,) = await self.enqueue_many(
            queue,
            [payload],
            key=key,
            delay=delay,
            max_attempts=max_attempts,
            timeout=timeout,
            trace_id=trace_id,
            priority=priority,
            broker=broker,
        )
        return job

    async def enqueue_many(
        self,
        queue: str,
        payloads: Iterable[JSONValue],
        *,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
        broker: Broker | str | None = None,
    ) -> list[Job]:
        """Enqueue many jobs in one broker call.

        The broker: ``broker`` if given (an open Broker, or a URL opened for this
        call); else the one the app runs on; else the app's own (a Broker, or a
        URL opened for this call; with none, ``$GUILD_BROKER``, else
        ``sqlite:guild.db``, as ``guild run`` does). Opening a URL per call costs
        a connection each time: a producer that enqueues often keeps a
        :class:`guild.AsyncClient` or :class:`guild.Client` open instead.

        Raises:
            UnknownBrokerURL: a URL to open is malformed, or ``memory://`` (a
                memory broker opened for one call would lose the job with it).
            ValueError: ``delay`` is negative or not finite, or a field is out of
                range (the checks :class:`guild.Client` makes).
        """
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        async with self._producing(broker) as target:
            return await enqueue_jobs(target, queue, list(payloads), **options)

    async def enqueue_and_wait(
        self,
        queue: str,
        payload: JSONValue = None,
        *,
        wait: float,
        key: str | None = None,
        delay: float | None = None,
        max_attempts: int | None = None,
        timeout: float | None = None,
        trace_id: str | None = None,
        priority: Priority | int | str = Priority.NORMAL,
        broker: Broker | str | None = None,
    ) -> Result | None:
        """Enqueue one job and wait up to ``wait`` seconds for its result.

        What :meth:`enqueue` then :meth:`result` answer, in one broker call: on
        a single Redis one round trip instead of two. ``None`` if the job has not
        finished in time (it stays enqueued and runs: enqueue and ask for the
        result apart when you need its id afterwards). For a duplicate ``key``:
        the result of the job that holds it. The broker is chosen as for
        :meth:`enqueue_many`.

        Raises:
            ValueError: ``wait`` or ``delay`` is negative or not finite, or a field
                is out of range; nothing stored.
            BrokerUnavailable: the broker refused the job (raised at once).
        """
        options = enqueue_options(key, delay, max_attempts, timeout, trace_id, priority)
        async with self._producing(broker) as target:
            return await enqueue_one_and_wait(target, queue, payload, wait, **options)

    async def result(
        self, job: Job | str, *, wait: float = 0.0, broker: Broker | str | None = None
    ) -> Result | None:
        """The result of a job, waiting up to ``wait`` seconds for it to finish.

        ``None`` if it has not finished in time. The broker is chosen as for
        :meth:`enqueue_many`, so a producer script can ask too.
        """
        job_id = job.id if isinstance(job, Job) else job
        async with self._producing(broker) as target:
            return await target.get_result(job_id, wait=wait)

    async def job(self, job: Job | str, *, broker: Broker | str | None = None) -> JobInfo:
        """Everything known of a job now: status, attempts, timings, the worker that
        ran it, its last error and traceback, its progress and its result (see
        :class:`guild.JobInfo`). The broker is chosen as for :meth:`enqueue_many`.

        Raises:
            UnknownJob: the broker knows no job with that id.
        """
        job_id = job.id if isinstance(job, Job) else job
        async with self._producing(broker) as target:
            return await job_info(target, job_id)

    async def cancel(self, job: Job | str, *, broker: Broker | str | None = None) -> bool:
        """Cancel a job: one waiting (ready, delayed, or held but not started) never
        runs; a running one has its handler cancelled within about a second, on
        whichever process runs it (its sandboxed processes killed with it). Either
        way it ends with the status ``CANCELLED``. The broker is chosen as for
        :meth:`enqueue_many`.

        Returns:
            True if the job was cancelled or its cancel requested; False when it
            is unknown or had already finished (its result stays as it was).
        """
        job_id = job.id if isinstance(job, Job) else job
        async with self._producing(broker) as target:
            return bool(await target.cancel([job_id]))

    # --- workflows -------------------------------------------------------------

    async def submit(
        self,
        workflow: Workflow,
        *,
        queues: Iterable[str] = (),
        broker: Broker | str | None = None,
    ) -> str:
        """Store a workflow and start its first steps; returns its id.

        Its steps then run as jobs on their queues, each once the steps it runs
        after are done; a coordinator (one runs inside every :meth:`run` on the
        broker) drives it. Submitting the same workflow again (same id, same
        spec) is a no-op that returns the id. The broker is chosen as for
        :meth:`enqueue_many`.

        Args:
            workflow: the workflow (see :class:`guild.Workflow`, :func:`guild.chain`).
            queues: queues served by workers of other processes: each step's
                queue must be one of these or of this app's workers.

        Raises:
            InvalidWorkflow: a rule is broken (``rule`` and ``step`` say which):
                an unknown queue, a cycle, an unknown step or compensation...
            BrokerError: the broker keeps no workflows.
        """
        from .workflows._coordinator import submit

        known = {spec.queue for spec in self._specs.values()} | set(queues)
        async with self._producing(broker) as target:
            workflow_id = await submit(target, workflow, known, emit=self._workflow_changed)
        if self._workflow_stored is not None:
            self._workflow_stored.set()  # the coordinator starts now, not at the next look
        return workflow_id

    async def workflow(
        self, workflow_id: str, *, wait: float = 0.0, broker: Broker | str | None = None
    ) -> WorkflowView:
        """A workflow's status and each step's state, attempts, timings, result or error.

        Args:
            wait: seconds to wait for the workflow to finish; the view comes back
                as it is then, finished or not (check ``view.finished``).

        Raises:
            UnknownWorkflow: no workflow has this id.
        """
        from .workflows._coordinator import view

        async with self._producing(broker) as target:
            return await view(target, workflow_id, wait=wait)

    async def workflows(
        self,
        *,
        statuses: Iterable[str] | None = None,
        limit: int = 100,
        broker: Broker | str | None = None,
    ) -> list[WorkflowView]:
        """Stored workflows, oldest first (of ``statuses`` only, if given)."""
        from .workflows._coordinator import views

        chosen = None if statuses is None else list(statuses)
        async with self._producing(broker) as target:
            return await views(target, statuses=chosen, limit=limit)

    async def cancel_workflow(
        self,
        workflow_id: str,
        *,
        reason: str = "cancel requested",
        broker: Broker | str | None = None,
    ) -> bool:
        """Stop a workflow: no new step starts, its running steps are cancelled and
        its completed steps compensated (last completed first); it ends ``cancelled``.

        Returns:
            False if it had finished, or was stopping, already.

        Raises:
            UnknownWorkflow: no workflow has this id.
        """
        from .workflows._coordinator import cancel

        async with self._producing(broker) as target:
            return await cancel(target, workflow_id, reason, emit=self._workflow_changed)

    @asynccontextmanager
    async def _producing(self, broker: Broker | str | None) -> AsyncIterator[Broker]:
        if type(broker) in _BROKER_CLASSES:
            yield cast("Broker", broker)
            return
        if isinstance(broker, Broker):
            _BROKER_CLASSES.add(type(broker))
            yield broker
            return
        url = broker
        if url is None:
            if self._broker is not None:
                yield self._broker
                return
            if isinstance(self._default_broker, Broker):
                yield self._default_broker
                return
            url = self._default_broker
        async with open_broker(client_url(url)) as opened:
            yield opened


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
