"""The health monitor: keeps what :func:`assess` needs, and builds its snapshots.

It reads job figures from a shared :class:`JobCounts` (sampled into rolling
windows, see :mod:`._window`) and listens itself only to rare events: claim
calls (for stall detection) and supervisor state changes. The HTTP shell
passes what only the app knows (the broker's counts, running jobs, handler
concurrency, memory) to :meth:`Monitor.snapshot`. Its clock is its own
(``trio.current_time`` unless given), so a MockClock drives it in tests.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING

import attrs
import trio

from .._job import QueueStats
from ..brokers._protocol import BrokerIssue
from ._events import ClaimPolled, Instrument, WorkerStateChanged
from ._quantiles import summary
from ._tally import JobCounts, WorkerCounts
from ._thresholds import Thresholds
from ._window import History

if TYPE_CHECKING:
    from ._health import Snapshot


@attrs.define(slots=True)
class _Worker:
    queue: str
    history: History
    first_seen: float | None = None
    state: str = "running"
    last_claim: float | None = None
    restarts: int = 0
    last_error: str | None = None


class Monitor(Instrument):
    """Keeps per-worker figures for ``/health``, ``/events`` and ``guild status``.

    Args:
        counts: where job figures come from (shared with the Prometheus instrument).
        thresholds: health thresholds; their ``window`` sizes the rolling windows.
        clock: the time source (default ``trio.current_time``).
    """

    def __init__(
        self,
        counts: JobCounts,
        thresholds: Thresholds | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.counts = counts
        self.thresholds = thresholds or Thresholds()
        self._clock = clock
        self._workers: dict[str, _Worker] = {}

    def _worker(self, name: str, queue: str | None = None) -> _Worker:
        worker = self._workers.get(name)
        if worker is None:
            worker = _Worker(queue=queue or name, history=History(self.thresholds.window))
            self._workers[name] = worker
        elif queue is not None:
            worker.queue = queue
        return worker

    def set_thresholds(self, thresholds: Thresholds) -> None:
        """Judge by new thresholds; a new window starts the windows afresh."""
        if thresholds.window != self.thresholds.window:
            for worker in self._workers.values():
                worker.history = History(thresholds.window)
        self.thresholds = thresholds

    def known(self, name: str, queue: str) -> None:
        """Track a worker before it says anything, so that it can be seen stalling."""
        self._worker(name, queue)

    def claim_polled(self, event: ClaimPolled) -> None:
        worker = self._worker(event.worker, event.queue)
        if event.claimed:
            worker.last_claim = self._clock()
        elif worker.first_seen is None:
            worker.first_seen = self._clock()

    def worker_state_changed(self, event: WorkerStateChanged) -> None:
        worker = self._worker(event.worker)
        worker.state = event.state
        if worker.first_seen is None:
            worker.first_seen = self._clock()
        if event.state == "restarting":
            worker.restarts += 1
        if event.last_error is not None:
            worker.last_error = event.last_error

    def sample(self) -> float:
        """Sample every worker's counts into its window (call at least every few seconds)."""
        now = self._clock()
        for name, counts in self.counts.workers.items():
            self._worker(name).history.record(now, counts)
        for worker in self._workers.values():
            if worker.first_seen is None:
                worker.first_seen = now
        return now

    async def serve_sampling(self) -> None:
        """Sample forever, often enough for the window to slide smoothly."""
        step = self.thresholds.window / 12
        while True:
            self.sample()
            await trio.sleep(step)

    def recent(self, now: float | None = None) -> dict[str, list[float]]:
        """Per worker, the durations of the attempts in the window ending now (at
        most the ring's size): what a ``guild run`` parent merges into the run's
        quantiles."""
        at = self.sample() if now is None else now
        found = {}
        for name, worker in self._workers.items():
            counts = self.counts.workers.get(name) or WorkerCounts()
            found[name] = counts.last(worker.history.figures(at, counts).finished)
        return found

    def states(self) -> dict[str, tuple[str, str]]:
        """``{worker: (queue, state)}`` as last heard."""
        return {name: (w.queue, w.state) for name, w in self._workers.items()}

    def snapshot(
        self,
        *,
        queues: Mapping[str, QueueStats] | None,
        broker_error: str | None = None,
        memory: float | None = None,
        active: Mapping[str, int] | None = None,
        concurrency: Mapping[str, int] | None = None,
        broker_errors: Mapping[str, str] | None = None,
        broker_damaged: Collection[str] = (),
        alive: Collection[str] | None = None,
        issues: tuple[BrokerIssue, ...] = (),
    ) -> tuple[Snapshot, float]:
        """The snapshot now, and the monitor's ``now`` it was taken at.

        Args:
            queues: the broker's counts (None: it could not be reached).
            broker_error: why it could not be reached.
            memory: fraction of the memory limit in use.
            active: jobs running now, per worker name.
            concurrency: handler tasks per worker name.
            broker_errors: per worker name, why it cannot reach the broker now.
            broker_damaged: the workers among those whose broker error is a damaged
                record (a ``BrokerDataError``), not an unreachable broker.
            alive: the names of the workers whose task is running (None: unknown,
                then every worker counts as alive).
            issues: what the broker found wrong with its backend.
        """
        # Here, not at the top: a run builds its monitor before its first job,
        # the policy's classes only when it is first asked for its health.
        from ._health import Snapshot, WorkerView

        now = self.sample()
        views = {}
        for name, worker in self._workers.items():
            counts = self.counts.workers.get(name) or WorkerCounts()
            window = worker.history.figures(now, counts)
            # True quantiles of the attempts in the window (the newest of them
            # when the ring holds fewer), not a histogram bucket's bound.
            quantiles = summary(counts.last(window.finished))
            views[name] = WorkerView(
                name=name,
                queue=worker.queue,
                state=worker.state,
                finished=window.finished,
                failed=window.failed,
                p50=quantiles["p50"],
                p95=quantiles["p95"],
                p99=quantiles["p99"],
                dead_total=counts.dead,
                active=(active or {}).get(name, 0),
                concurrency=(concurrency or {}).get(name),
                last_claim=worker.last_claim
                if worker.last_claim is not None
                else worker.first_seen,
                restarts=worker.restarts,
                last_error=worker.last_error,
                processed=counts.processed,
                failed_total=counts.failed,
                broker_error=(broker_errors or {}).get(name),
                broker_damaged=name in broker_damaged,
                alive=alive is None or name in alive,
            )
        snapshot = Snapshot(
            workers=views,
            queues=queues,
            broker_error=broker_error,
            memory=memory,
            issues=issues,
        )
        return snapshot, now
