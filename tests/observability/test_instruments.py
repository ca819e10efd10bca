"""The pieces behind /health and /events: windows, the monitor, the hub, memory readings."""

from __future__ import annotations

import gc
import weakref

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild import Job, MemoryBroker, QueueStats
from guild.observability import (
    DURATION_BUCKETS,
    ClaimPolled,
    EventHub,
    Instruments,
    JobCounts,
    Monitor,
    ObservabilityApp,
    Outcome,
    Status,
    Thresholds,
    observe,
)
from guild.observability._memory import fraction_used, parse_cgroup, parse_meminfo
from guild.observability._tally import WorkerCounts
from guild.observability._window import History, quantile

from .helpers import finished, state


class TestWindow:
    """Window figures are differences of cumulative counts; quantiles come from buckets."""

    def test_old_attempts_leave_the_window(self) -> None:
        counts = WorkerCounts()
        history = History(60.0, slots=6)
        history.record(0.0, counts)
        counts.processed, counts.failed = 100, 5
        history.record(30.0, counts)
        assert history.figures(30.0, counts).failed == 5
        counts.processed += 10
        history.record(70.0, counts)
        figures = history.figures(95.0, counts)
        assert (figures.finished, figures.failed) == (10, 0)

    @given(st.lists(st.sampled_from(DURATION_BUCKETS), min_size=1, max_size=200))
    def test_quantile_is_an_upper_bound(self, durations: list[float]) -> None:
        counts = WorkerCounts()
        for d in durations:
            counts.durations[DURATION_BUCKETS.index(d)] += 1
        p95 = quantile(counts.durations, 0.95)
        assert p95 is not None
        exact = sorted(durations)[max(0, -(-95 * len(durations) // 100) - 1)]
        assert p95 >= exact

    def test_empty_window_has_no_quantile(self) -> None:
        assert quantile([0] * (len(DURATION_BUCKETS) + 1), 0.95) is None


class TestMonitor:
    """The monitor turns events and counts into worker views."""

    def test_error_rate_and_stall_inputs(self) -> None:
        now = [100.0]
        counts = JobCounts()
        monitor = Monitor(counts, Thresholds(window=60), clock=lambda: now[0])
        monitor.known("w", "q")
        for _ in range(9):
            counts.job_finished(finished("w"))
        counts.job_finished(finished("w", Outcome.RETRY, 7.0))
        counts.job_finished(finished("w", Outcome.RELEASED))
        monitor.claim_polled(ClaimPolled(worker="w", queue="q", claimed=3, at=0.0))
        now[0] = 130.0
        snapshot, at = monitor.snapshot(
            queues={"q": QueueStats(queue="q", ready=2)}, active={"w": 1}
        )
        view = snapshot.workers["w"]
        assert at == 130.0
        assert (view.finished, view.failed, view.active) == (10, 1, 1)
        # True nearest-rank quantiles of nine 0.01 s attempts and one of 7 s (the
        # 7.5 s bucket bound is not a duration any attempt took).
        assert (view.p50, view.p95, view.p99) == (0.01, 7.0, 7.0)
        assert view.last_claim == 100.0

    def test_restarts_and_last_error(self) -> None:
        monitor = Monitor(JobCounts(), clock=lambda: 0.0)
        monitor.worker_state_changed(state("w", "crashed", error="BrokerUnavailable: gone"))
        monitor.worker_state_changed(state("w", "restarting"))
        view = monitor.snapshot(queues={})[0].workers["w"]
        assert (view.state, view.restarts, view.last_error) == (
            "restarting",
            1,
            "BrokerUnavailable: gone",
        )

    async def test_sampling_slides_the_window(self, autojump_clock: trio.testing.MockClock) -> None:
        counts = JobCounts()
        monitor = Monitor(counts, Thresholds(window=60))
        counts.job_finished(finished("w", Outcome.DEAD))
        with trio.move_on_after(120):
            await monitor.serve_sampling()
        view = monitor.snapshot(queues={})[0].workers["w"]
        assert (view.finished, view.failed_total) == (0, 1)


class TestHub:
    """The hub fans out in order, never blocks, and drops a subscriber that lags."""

    async def test_order_and_drop(self) -> None:
        hub = EventHub(buffer=3, clock=lambda: 0.0)
        with hub.subscribe() as fast, hub.subscribe() as slow:
            for n in range(3):
                hub.job_finished(finished("w", job=None, duration=n))
                fast.receive.receive_nowait()
            hub.job_finished(finished("w", duration=3))
            assert slow.dropped
            assert not fast.dropped
            assert [m["duration"] for m in [slow.receive.receive_nowait() for _ in range(3)]] == [
                0,
                1,
                2,
            ]
            assert hub.statistics().dropped == 1
            assert hub.statistics().subscribers == 1

    async def test_an_attached_hub_listens_only_with_subscribers(self) -> None:
        instruments = Instruments()
        hub = EventHub()
        hub.attach(instruments)
        assert not instruments.wants("job_started")
        with hub.subscribe():
            assert instruments.wants("job_started")
            instruments.emit("worker_state_changed", state("w", "open"))
        assert not instruments.wants("job_started")

    def test_buffer_must_hold_something(self) -> None:
        with pytest.raises(ValueError, match="buffer"):
            EventHub(buffer=0)


class TestMemory:
    """Memory use is read from cgroup limits when set, else from /proc/meminfo."""

    def test_meminfo(self) -> None:
        text = "MemTotal:  1000 kB\nMemFree: 10 kB\nMemAvailable:  250 kB\n"
        assert parse_meminfo(text) == (1024_000, 256_000)
        assert fraction_used(parse_meminfo(text), None) == 0.75

    def test_a_cgroup_limit_below_ram_wins(self) -> None:
        assert fraction_used((4096, 1024), parse_cgroup("900\n", "1000\n")) == 0.9
        assert fraction_used((4096, 1024), parse_cgroup("900\n", "max\n")) == 0.75

    def test_unknown_is_none(self) -> None:
        assert fraction_used(None, None) is None
        assert parse_meminfo("nothing") is None


class TestStall:
    """A worker that leaves ready jobs unclaimed past the stall time makes the app unhealthy."""

    async def test_unclaimed_ready_jobs_turn_unhealthy(
        self, autojump_clock: trio.testing.MockClock
    ) -> None:
        broker = MemoryBroker()
        app = guild.Guild("stuck", broker=broker)

        @app.worker("q", concurrency=2)
        async def handle(job: Job) -> None:
            return None

        site = ObservabilityApp(app, observe(app, logs=False), memory=lambda: 0.1)
        await broker.enqueue([Job(queue="q", payload=1)])
        health, _ = await site.health()
        assert health.status is Status.HEALTHY  # just seen: not stalled yet
        await trio.sleep(61)
        health, _ = await site.health()
        assert health.status is Status.UNHEALTHY
        check = next(c for c in health.checks if c.name == "worker:q:claiming")
        assert check.detail == "1 jobs ready, nothing claimed for 61s"


class TestObserve:
    """observe() installs the instruments once and does not keep the app alive."""

    def test_once_per_app_and_later_thresholds_apply(self) -> None:
        app = guild.Guild("a")
        first = observe(app, logs=False)
        again = observe(app, thresholds=Thresholds(error_rate=0.5))
        assert again is first
        assert first.monitor.thresholds.error_rate == 0.5
        assert sum(isinstance(i, Monitor) for i in app.instruments) == 1

    def test_an_observed_app_can_be_collected(self) -> None:
        app = guild.Guild("gone")
        observe(app)
        ref = weakref.ref(app)
        del app
        gc.collect()
        assert ref() is None
