"""The health policy: snapshot + thresholds + now -> verdict, checked over generated inputs."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guild import QueueStats
from guild.observability import Snapshot, Status, Thresholds, WorkerView, assess
from guild.observability._health import CLAIMING_STATES, DEGRADED_STATES, UNHEALTHY_STATES

STATES = sorted(CLAIMING_STATES | DEGRADED_STATES | UNHEALTHY_STATES | {"draining", "stopped"})
NOW = 10_000.0


@st.composite
def workers(draw: st.DrawFn, name: str) -> WorkerView:
    finished = draw(st.integers(0, 10_000))
    return WorkerView(
        name=name,
        queue=draw(st.sampled_from(["q1", "q2", "q3"])),
        state=draw(st.sampled_from(STATES)),
        finished=finished,
        failed=draw(st.integers(0, finished)),
        p95=draw(st.none() | st.floats(0, 1000)),
        active=draw(st.integers(0, 64)),
        concurrency=draw(st.none() | st.integers(1, 64)),
        last_claim=draw(st.none() | st.floats(0, NOW)),
    )


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "d"]), unique=True, max_size=4))
    queues = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(["q1", "q2", "q3"]),
            st.builds(
                QueueStats,
                queue=st.just("q"),
                ready=st.integers(0, 5000),
                delayed=st.integers(0, 5000),
            ),
        )
    )
    return Snapshot(
        workers={n: draw(workers(n)) for n in names},
        queues=queues,
        broker_error=None if queues is not None else "down",
        memory=draw(st.none() | st.floats(0, 1)),
    )


thresholds = st.builds(
    Thresholds,
    error_rate=st.floats(0, 1),
    p95_latency=st.floats(0.01, 100),
    memory=st.floats(0, 1),
    queue_length=st.integers(0, 5000),
    stall=st.floats(0.1, 5000),
    min_jobs=st.integers(1, 100),
)


class TestVerdict:
    """The overall status is the worst check, and HTTP 503 means unhealthy."""

    @given(snapshots(), thresholds)
    def test_status_is_the_worst_check(self, snapshot: Snapshot, limits: Thresholds) -> None:
        health = assess(snapshot, limits, NOW)
        assert health.status.severity == max(c.status.severity for c in health.checks)
        assert (health.http_status == 503) == (health.status is Status.UNHEALTHY)

    @given(snapshots(), thresholds)
    def test_json_names_every_check_and_worker(
        self, snapshot: Snapshot, limits: Thresholds
    ) -> None:
        body = assess(snapshot, limits, NOW).to_json(NOW)
        assert body["status"] in {"healthy", "degraded", "unhealthy"}
        assert set(body["workers"]) == set(snapshot.workers)
        assert {"broker", "memory"} <= set(body["checks"])

    def test_an_idle_app_is_healthy(self) -> None:
        snapshot = Snapshot(workers={"w": WorkerView(name="w", queue="q")}, queues={})
        assert assess(snapshot, Thresholds(), NOW).status is Status.HEALTHY


class TestUnhealthy:
    """An unreachable broker, an open circuit or a stalled worker is unhealthy."""

    @given(snapshots(), thresholds)
    def test_unreachable_broker(self, snapshot: Snapshot, limits: Thresholds) -> None:
        down = attrs.evolve(snapshot, queues=None)
        assert assess(down, limits, NOW).status is Status.UNHEALTHY

    @given(snapshots(), thresholds, st.sampled_from(sorted(UNHEALTHY_STATES)))
    def test_open_circuit_or_gave_up(
        self, snapshot: Snapshot, limits: Thresholds, state: str
    ) -> None:
        workers = dict(snapshot.workers)
        workers["z"] = WorkerView(name="z", queue="q1", state=state)
        health = assess(attrs.evolve(snapshot, workers=workers), limits, NOW)
        assert health.status is Status.UNHEALTHY
        assert health.to_json(NOW)["checks"]["worker:z:state"]["status"] == "unhealthy"

    @given(
        stall=st.floats(1, 1000),
        idle=st.floats(0, 2000),
        ready=st.integers(0, 10),
        active=st.integers(0, 8),
    )
    def test_stall_needs_ready_jobs_a_free_handler_and_a_long_silence(
        self, stall: float, idle: float, ready: int, active: int
    ) -> None:
        worker = WorkerView(
            name="w", queue="q", active=active, concurrency=4, last_claim=NOW - idle
        )
        snapshot = Snapshot(workers={"w": worker}, queues={"q": QueueStats(queue="q", ready=ready)})
        health = assess(snapshot, Thresholds(stall=stall), NOW)
        claiming = next(c for c in health.checks if c.name == "worker:w:claiming")
        stalled = ready > 0 and NOW - (NOW - idle) > stall and active < 4
        assert (claiming.status is Status.UNHEALTHY) == stalled


class TestDegraded:
    """Crossing a threshold degrades; a value equal to its limit does not."""

    @given(st.integers(1, 10_000), st.data())
    def test_error_rate_above_one_percent(self, finished: int, data: st.DataObject) -> None:
        failed = data.draw(st.integers(0, finished))
        worker = WorkerView(name="w", queue="q", finished=finished, failed=failed)
        health = assess(Snapshot(workers={"w": worker}), Thresholds(), NOW)
        assert (health.status is Status.DEGRADED) == (failed / finished > 0.01)

    def test_exactly_one_percent_is_not_degraded(self) -> None:
        worker = WorkerView(name="w", queue="q", finished=100, failed=1)
        assert assess(Snapshot(workers={"w": worker}), Thresholds(), NOW).status is Status.HEALTHY
        worse = attrs.evolve(worker, failed=2)
        assert assess(Snapshot(workers={"w": worse}), Thresholds(), NOW).status is Status.DEGRADED

    @pytest.mark.parametrize(
        ("snapshot", "check"),
        [
            (
                Snapshot(workers={"w": WorkerView(name="w", queue="q", p95=5.01)}),
                "worker:w:p95_latency",
            ),
            (Snapshot(memory=0.81), "memory"),
            (Snapshot(queues={"q": QueueStats(queue="q", ready=1001)}), "queue:q:length"),
            (
                Snapshot(workers={"w": WorkerView(name="w", queue="q", state="restarting")}),
                "worker:w:state",
            ),
        ],
    )
    def test_each_seed_threshold(self, snapshot: Snapshot, check: str) -> None:
        health = assess(snapshot, Thresholds(), NOW)
        assert health.status is Status.DEGRADED
        assert health.to_json(NOW)["checks"][check]["status"] == "degraded"

    @given(snapshots(), thresholds, st.integers(0, 1000))
    def test_more_failures_never_improve_health(
        self, snapshot: Snapshot, limits: Thresholds, extra: int
    ) -> None:
        worse = {
            name: attrs.evolve(w, finished=w.finished + extra, failed=w.failed + extra)
            for name, w in snapshot.workers.items()
        }
        before = assess(snapshot, limits, NOW).status.severity
        after = assess(attrs.evolve(snapshot, workers=worse), limits, NOW).status.severity
        assert after >= before

    @settings(max_examples=50)
    @given(snapshots(), thresholds)
    def test_looser_thresholds_never_worsen_health(
        self, snapshot: Snapshot, limits: Thresholds
    ) -> None:
        looser = attrs.evolve(
            limits,
            error_rate=1.0,
            p95_latency=limits.p95_latency * 2,
            memory=1.0,
            queue_length=limits.queue_length * 2,
            stall=limits.stall * 2,
        )
        before = assess(snapshot, limits, NOW).status.severity
        assert assess(snapshot, looser, NOW).status.severity <= before


class TestThresholds:
    """Thresholds are validated when built."""

    @pytest.mark.parametrize(
        "bad", [{"error_rate": 1.5}, {"memory": -0.1}, {"p95_latency": 0}, {"stall": float("inf")}]
    )
    def test_invalid_thresholds_are_refused(self, bad: dict[str, float]) -> None:
        with pytest.raises(ValueError, match=next(iter(bad))):
            Thresholds(**bad)  # type: ignore[arg-type]
