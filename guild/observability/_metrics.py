"""The Prometheus instrument: runtime events in, metrics out.

One :class:`prometheus_client.CollectorRegistry` per instrument (so per app):
two apps in one process never collide, and nothing lands in the global
registry behind a user's back. Every series carries an ``app`` label as well,
because in multiprocess mode all apps of all processes share one directory.

Multiprocess (``guild run --processes N``): prometheus-client's own mode. When
``PROMETHEUS_MULTIPROC_DIR`` names a directory *before prometheus_client is
imported* (``guild run`` sets it for its children), every value lives in an
mmap'd file of that directory, and :meth:`PrometheusInstrument.render` merges
the files of every process with ``MultiProcessCollector``: whoever renders
them reports the sum of all (``guild run``'s parent does, see
:mod:`._fleet_http`). Gauges say how to merge: active jobs
add up across live processes (``livesum``), worker states keep a ``pid`` label
(``liveall``), queue depth and memory take the most recent reading.

Per job, the instrument only counts (it is a :class:`JobCounts`: plain Python
arithmetic, no lock). The counts reach prometheus-client at each scrape and,
under :func:`serve_http`, once a second (:meth:`PrometheusInstrument.flush`):
in multiprocess mode the process that answers a scrape reads the others'
values from their files, flushed at most a second ago.

prometheus-client itself (about 15 ms to import) loads when the metrics are
first needed: a scrape, a flush, :func:`serve_http` starting, or an event that
only the metrics record (a rate-limit wait, a sandbox run). Until then worker
states are only remembered, and written to their gauges when the metrics are
made, so ``guild run`` without ``--http`` never loads it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import trio

from .._job import QueueStats
from ..supervision._states import WorkerState
from ._events import WorkerStateChanged
from ._tally import DURATION_BUCKETS, JobCounts, WorkerCounts

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from ._feature_events import JobLimitWaited, LoopStalled, RateLimited, SandboxRan

WORKER_STATES = tuple(state.value for state in WorkerState)
"""Every state ``guild_worker_state`` reports (one series each, the current one is 1)."""
QUEUE_STATUSES = ("ready", "delayed", "in_flight", "dead")
_WAIT_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0)
"""Rate-limiter wait bucket bounds, in seconds."""


def multiprocess_dir() -> str | None:
    """The directory shared by all processes, when multiprocess mode is on in this one."""
    import prometheus_client.values

    if prometheus_client.values.ValueClass is prometheus_client.values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR")


def _add_buckets(histogram: Any, counts: list[int], total: float) -> None:
    # prometheus-client has no "observe many"; its Histogram child keeps one
    # non-cumulative value per bucket (``_buckets``, +Inf last) and ``_sum``,
    # and ``observe`` increments exactly those. A test pins this contract.
    for index, count in enumerate(counts):
        if count:
            histogram._buckets[index].inc(count)
    histogram._sum.inc(total)


class PrometheusInstrument(JobCounts):
    """Counts and times jobs; tracks workers, queues, rate limiters and the sandbox.

    Args:
        app: the app's name (the ``app`` label).
        registry: where the metrics register (default: a fresh one).
        active: reads the jobs running now per worker, for ``guild_jobs_active``
            (:func:`observe` passes the app's worker statistics).
    """

    def __init__(
        self,
        app: str = "guild",
        *,
        registry: CollectorRegistry | None = None,
        active: Callable[[], Mapping[str, int]] | None = None,
    ) -> None:
        super().__init__()
        self.app = app
        self._states: dict[str, str] = {}
        self._restarts: dict[str, int] = {}
        # Service restarts and loop stalls seen before the metrics existed.
        self._service_restarts: dict[str, int] = {}
        self._stalls = 0
        self._flushed: dict[str, WorkerCounts] = {}
        self._active = active
        self._made = False
        if registry is not None:
            self._make(registry)

    # The metrics' names, which exist once :meth:`_make` has run.
    registry: CollectorRegistry
    processed: Counter
    failed: Counter
    retried: Counter
    dead: Counter
    duration: Histogram
    active: Gauge
    queue: Gauge
    ledger: Gauge
    broker_up: Gauge
    memory: Gauge
    restarts: Counter
    state: Gauge
    service_restarts: Counter
    loop_stalls: Counter
    ratelimit_wait: Histogram
    limit_wait: Histogram
    sandbox_runs: Counter
    sandbox_refusals: Counter
    sandbox_duration: Histogram

    def __getattr__(self, name: str) -> Any:
        # Only reached for a name not set yet: a metric before _make has run.
        if name in _METRIC_NAMES and not self.__dict__.get("_made", True):
            self._make(None)
            return getattr(self, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _make(self, registry: CollectorRegistry | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self._made = True
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        worker = ("app", "worker")
        self.processed = Counter("guild_jobs_processed", "Jobs done.", worker, registry=r)
        self.failed = Counter(
            "guild_jobs_failed", "Attempts that failed (retried or dead).", worker, registry=r
        )
        self.retried = Counter(
            "guild_jobs_retried", "Attempts scheduled for retry.", worker, registry=r
        )
        self.dead = Counter(
            "guild_jobs_dead", "Jobs moved to the dead letters.", worker, registry=r
        )
        self.duration = Histogram(
            "guild_job_duration_seconds",
            "Processing time of an attempt.",
            worker,
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.active = Gauge(
            "guild_jobs_active",
            "Jobs running now.",
            worker,
            registry=r,
            multiprocess_mode="livesum",
        )
        self._register_runtime_metrics(r)
        # The states and restarts seen before the metrics existed.
        for name, state in self._states.items():
            for known in WORKER_STATES:
                self.state.labels(self.app, name, known).set(1 if known == state else 0)
        for name, count in self._restarts.items():
            self.restarts.labels(self.app, name).inc(count)
        for name, count in self._service_restarts.items():
            self.service_restarts.labels(self.app, name).inc(count)
        if self._stalls:
            self.loop_stalls.labels(self.app).inc(self._stalls)

    def _register_runtime_metrics(self, r: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        worker = ("app", "worker")
        self.queue = Gauge(
            "guild_queue_jobs",
            "Jobs in the broker by queue and status.",
            ("app", "queue", "status"),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.ledger = Gauge(
            "guild_ledger_count",
            "Durable counts workers keep in the broker's Ledger (by namespace, key and name;"
            " e.g. the ResultWorker's deliveries per channel).",
            ("app", "namespace", "key", "name"),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.broker_up = Gauge(
            "guild_broker_up",
            "1 if the broker answered the last scrape.",
            ("app",),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.memory = Gauge(
            "guild_memory_usage_ratio",
            "Fraction of the memory limit in use.",
            ("app",),
            registry=r,
            multiprocess_mode="livemostrecent",
        )
        self.restarts = Counter("guild_worker_restarts", "Worker restarts.", worker, registry=r)
        self.service_restarts = Counter(
            "guild_service_restarts",
            "Restarts of a run's system tasks (http, rollout recorder, canary controller,"
            " workflow coordinator) after a crash.",
            ("app", "service"),
            registry=r,
        )
        self.loop_stalls = Counter(
            "guild_loop_stalls",
            "Times the event loop was blocked past the stall watchdog's threshold.",
            ("app",),
            registry=r,
        )
        self.state = Gauge(
            "guild_worker_state",
            "1 for a worker's current supervisor state.",
            ("app", "worker", "state"),
            registry=r,
            multiprocess_mode="liveall",
        )
        self.ratelimit_wait = Histogram(
            "guild_ratelimit_wait_seconds",
            "Waits at a rate limiter (_count: how many).",
            ("app", "limiter"),
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        # Per worker only: a limit's keys (tenants, channels) are unbounded in
        # number, and a label per key would grow the series without end.
        self.limit_wait = Histogram(
            "guild_job_limit_wait_seconds",
            "Time jobs waited for their worker's limit before running (_count: admissions).",
            worker,
            buckets=_WAIT_BUCKETS,
            registry=r,
        )
        self.sandbox_runs = Counter(
            "guild_sandbox_runs",
            "Sandboxed commands by result (ok, failed, killed, refused).",
            ("app", "result"),
            registry=r,
        )
        self.sandbox_refusals = Counter(
            "guild_sandbox_refusals",
            "Sandboxed commands refused, by rule.",
            ("app", "rule"),
            registry=r,
        )
        self.sandbox_duration = Histogram(
            "guild_sandbox_duration_seconds",
            "Run time of sandboxed commands.",
            ("app",),
            buckets=DURATION_BUCKETS,
            registry=r,
        )

    # --- instrument hooks ----------------------------------------------------

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        worker, state = event.worker, event.state
        previous = self._states.get(worker)
        if not self._made:
            # Remembered only; _make writes the gauges from these.
            self._states[worker] = state
            if state == "restarting":
                self._restarts[worker] = self._restarts.get(worker, 0) + 1
            return
        if previous is None:
            for name in WORKER_STATES:
                self.state.labels(self.app, worker, name).set(0)
        elif previous != state:
            self.state.labels(self.app, worker, previous).set(0)
        self.state.labels(self.app, worker, state).set(1)
        self._states[worker] = state
        if state == "restarting":
            self.restarts.labels(self.app, worker).inc()

    def service_state_changed(self, event: WorkerStateChanged) -> None:
        if event.state != "restarting":
            return
        if not self._made:
            self._service_restarts[event.worker] = self._service_restarts.get(event.worker, 0) + 1
            return
        self.service_restarts.labels(self.app, event.worker).inc()

    def loop_stalled(self, event: LoopStalled) -> None:
        # From the watchdog's thread: prometheus-client's counters take a lock.
        if not self._made:
            self._stalls += 1
            return
        self.loop_stalls.labels(self.app).inc()

    def rate_limited(self, event: RateLimited) -> None:
        self.ratelimit_wait.labels(self.app, event.limiter).observe(event.waited)

    def job_limit_waited(self, event: JobLimitWaited) -> None:
        self.limit_wait.labels(self.app, event.worker).observe(event.waited)

    def sandbox_ran(self, event: SandboxRan) -> None:
        if event.refused_rule is not None:
            result = "refused"
            self.sandbox_refusals.labels(self.app, event.refused_rule).inc()
        elif event.exit_code is None:
            result = "killed"
        else:
            result = "ok" if event.exit_code == 0 else "failed"
        self.sandbox_runs.labels(self.app, result).inc()
        if event.refused_rule is None:
            self.sandbox_duration.labels(self.app).observe(event.duration)

    # --- scrape-time readings --------------------------------------------------

    def set_queues(self, queues: Mapping[str, QueueStats] | None) -> None:
        """Record the broker's counts (None: the broker did not answer)."""
        self.broker_up.labels(self.app).set(0 if queues is None else 1)
        for name, stats in (queues or {}).items():
            if stats.broken is not None:
                continue  # not read (QueueStats.broken): no made-up zeros
            for status in QUEUE_STATUSES:
                self.queue.labels(self.app, name, status).set(getattr(stats, status))

    def set_ledger(self, counts: Mapping[str, Mapping[str, Mapping[str, float]]]) -> None:
        """Record the broker's Ledger counts (``{namespace: {key: {name: value}}}``)."""
        for namespace, by_key in counts.items():
            for key, numbers in by_key.items():
                for name, value in numbers.items():
                    self.ledger.labels(self.app, namespace, key, name).set(value)

    def flush(self) -> None:
        """Move the job counts gathered since the last flush into the metrics."""
        self.make()
        app = self.app
        for worker, counts in self.workers.items():
            before = self._flushed.get(worker) or WorkerCounts()
            for counter, delta in (
                (self.processed, counts.processed - before.processed),
                (self.failed, counts.failed - before.failed),
                (self.retried, counts.retried - before.retried),
                (self.dead, counts.dead - before.dead),
            ):
                counter.labels(app, worker).inc(delta)
            _add_buckets(
                self.duration.labels(app, worker),
                [now - then for now, then in zip(counts.durations, before.durations, strict=True)],
                counts.duration_sum - before.duration_sum,
            )
            self._flushed[worker] = counts.copy()
        if self._active is not None:
            for worker, running in self._active().items():
                self.active.labels(app, worker).set(running)

    def make(self) -> None:
        """Create the metrics now (loading prometheus-client), if not yet made.

        :func:`serve_http` calls it as it starts, so that from then on every
        state change reaches its gauge at once, as other processes read it.
        """
        if not self._made:
            self._make(None)

    async def serve_flush(self, interval: float = 1.0) -> None:
        """Flush every ``interval`` seconds, forever (multiprocess: other processes scrape)."""
        while True:
            await trio.sleep(interval)
            self.flush()

    def set_memory(self, fraction: float | None) -> None:
        if fraction is not None:
            self.memory.labels(self.app).set(fraction)

    def render(self) -> bytes:
        """The Prometheus text exposition: this app's, or every process's in multiprocess mode."""
        self.flush()
        directory = multiprocess_dir()
        if directory is None:
            return _generate(self.registry)
        from prometheus_client import CollectorRegistry
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
        return _generate(merged)


_METRIC_NAMES = frozenset(PrometheusInstrument.__annotations__)


def _generate(registry: CollectorRegistry) -> bytes:
    import prometheus_client

    data: Any = prometheus_client.generate_latest(registry)
    return bytes(data)
