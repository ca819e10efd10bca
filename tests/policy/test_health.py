"""The health policy: snapshot + thresholds + now -> verdict, checked over generated inputs."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guild import QueueStats
from guild.observability import Snapshot, Status, Thresholds, WorkerView, assess
from guild.observability._health import Health

# Written out from the documented rules (guild/observability/_health.py), not
# imported from the module: dropping a state from the module's sets must fail here.
HEALTHY_STATES = ["starting", "running", "closed"]  # the states that claim, and can stall
DEGRADED_STATES = ["crashed", "restarting", "half_open", "draining"]
UNHEALTHY_STATES = ["open", "gave_up", "stopped", "exited", "no-such-state"]
STATES = HEALTHY_STATES + DEGRADED_STATES + UNHEALTHY_STATES
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

    @given(snapshots(), thresholds, st.sampled_from(UNHEALTHY_STATES))
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


def _check(health: Health, name: str) -> dict[str, object]:
    checks: dict[str, dict[str, object]] = health.to_json(NOW)["checks"]
    return checks[name]


class TestStatesWrittenOut:
    """Every supervisor state, written out, maps to its documented verdict."""

    @pytest.mark.parametrize(
        ("state", "status"),
        [(s, "healthy") for s in HEALTHY_STATES]
        + [(s, "degraded") for s in DEGRADED_STATES]
        + [(s, "unhealthy") for s in UNHEALTHY_STATES],
    )
    def test_state_check(self, state: str, status: str) -> None:
        worker = WorkerView(name="w", queue="q", state=state, last_error="boom")
        health = assess(Snapshot(workers={"w": worker}), Thresholds(), NOW)
        check = _check(health, "worker:w:state")
        assert (check["status"], check["value"]) == (status, state)
        assert check["detail"] == ("" if status == "healthy" else "boom")
        assert health.status.value == status

    @pytest.mark.parametrize("state", STATES)
    def test_only_claiming_states_can_stall(self, state: str) -> None:
        worker = WorkerView(name="w", queue="q", state=state, concurrency=4, last_claim=0.0)
        queues = {"q": QueueStats(queue="q", ready=3)}
        health = assess(Snapshot(workers={"w": worker}, queues=queues), Thresholds(), NOW)
        check = _check(health, "worker:w:claiming")
        if state in HEALTHY_STATES:
            assert check["status"] == "unhealthy"
            assert check["detail"] == "3 jobs ready, nothing claimed for 10000s"
        else:
            assert check["status"] == "healthy"
        assert (check["value"], check["limit"]) == (10_000.0, 60.0)


class TestThresholdsWrittenOut:
    """The seed's defaults, each checked at its limit and just above it."""

    @pytest.mark.parametrize(
        ("at_limit", "above", "check"),
        [
            (
                Snapshot(workers={"w": WorkerView(name="w", queue="q", p95=5.0)}),
                Snapshot(workers={"w": WorkerView(name="w", queue="q", p95=5.001)}),
                "worker:w:p95_latency",
            ),
            (Snapshot(memory=0.80), Snapshot(memory=0.8001), "memory"),
            (
                Snapshot(queues={"q": QueueStats(queue="q", ready=1000)}),
                Snapshot(queues={"q": QueueStats(queue="q", ready=1001)}),
                "queue:q:length",
            ),
            (
                Snapshot(workers={"w": WorkerView(name="w", queue="q", finished=1000, failed=10)}),
                Snapshot(workers={"w": WorkerView(name="w", queue="q", finished=1000, failed=11)}),
                "worker:w:error_rate",
            ),
        ],
    )
    def test_degraded_only_above_the_default(
        self, at_limit: Snapshot, above: Snapshot, check: str
    ) -> None:
        assert _check(assess(at_limit, Thresholds(), NOW), check)["status"] == "healthy"
        assert _check(assess(above, Thresholds(), NOW), check)["status"] == "degraded"

    @pytest.mark.parametrize(("idle", "status"), [(60.0, "healthy"), (60.5, "unhealthy")])
    def test_default_stall_is_sixty_seconds(self, idle: float, status: str) -> None:
        worker = WorkerView(name="w", queue="q", concurrency=2, last_claim=NOW - idle)
        snapshot = Snapshot(workers={"w": worker}, queues={"q": QueueStats(queue="q", ready=1)})
        assert _check(assess(snapshot, Thresholds(), NOW), "worker:w:claiming")["status"] == status

    def test_default_min_jobs_counts_the_first_failure(self) -> None:
        worker = WorkerView(name="w", queue="q", finished=1, failed=1)
        check = _check(
            assess(Snapshot(workers={"w": worker}), Thresholds(), NOW), "worker:w:error_rate"
        )
        assert check == {
            "status": "degraded",
            "value": 1.0,
            "limit": 0.01,
            "detail": "1 of 1 attempts failed",
        }

    @pytest.mark.parametrize(("finished", "status"), [(9, "healthy"), (10, "degraded")])
    def test_min_jobs(self, finished: int, status: str) -> None:
        worker = WorkerView(name="w", queue="q", finished=finished, failed=finished)
        health = assess(Snapshot(workers={"w": worker}), Thresholds(min_jobs=10), NOW)
        assert _check(health, "worker:w:error_rate")["status"] == status

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ({"error_rate": -0.01}, "error_rate must be a fraction in"),
            ({"error_rate": 1.01}, "error_rate must be a fraction in"),
            ({"memory": 1.01}, "memory must be a fraction in"),
            ({"memory": -0.01}, "memory must be a fraction in"),
            ({"p95_latency": -1.0}, "p95_latency must be a positive number"),
            ({"p95_latency": float("nan")}, "p95_latency must be a positive number"),
            ({"stall": 0.0}, "stall must be a positive number"),
            ({"window": 0.0}, "window must be a positive number"),
            ({"window": float("inf")}, "window must be a positive number"),
            ({"queue_length": -1}, "queue_length"),
            ({"min_jobs": 0}, "min_jobs"),
        ],
    )
    def test_validators(self, bad: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            Thresholds(**bad)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        assert Thresholds() == Thresholds(
            error_rate=0.01,
            p95_latency=5.0,
            memory=0.80,
            queue_length=1000,
            stall=60.0,
            window=60.0,
            min_jobs=1,
        )
        assert Thresholds().window == 60.0
        with pytest.raises(TypeError):
            Thresholds(0.5)  # type: ignore[misc]

    def test_a_new_worker_reports_zeros(self) -> None:
        worker = WorkerView(name="w", queue="q")
        body = assess(Snapshot(workers={"w": worker}), Thresholds(), NOW).to_json(NOW)
        shown = body["workers"]["w"]
        assert {k: shown[k] for k in ("state", "active", "processed", "failed", "restarts")} == {
            "state": "running",
            "active": 0,
            "processed": 0,
            "failed": 0,
            "restarts": 0,
        }
        assert (shown["error_rate"], shown["p95"], shown["last_error"]) == (0.0, None, None)

    def test_boundaries_are_accepted(self) -> None:
        Thresholds(error_rate=0.0, memory=0.0, queue_length=0, min_jobs=1)
        Thresholds(error_rate=1.0, memory=1.0)


class TestChecksWrittenOut:
    """What each check reports, for one snapshot written out."""

    def test_a_busy_snapshot(self) -> None:
        worker = WorkerView(
            name="w",
            queue="q",
            finished=200,
            failed=3,
            p95=7.5,
            active=1,
            concurrency=4,
            last_claim=NOW - 12.5,
            restarts=2,
            last_error="boom",
            processed=500,
            failed_total=9,
        )
        snapshot = Snapshot(
            workers={"w": worker}, queues={"q": QueueStats(queue="q", ready=1500)}, memory=0.85
        )
        health = assess(snapshot, Thresholds(), NOW)
        assert health.status is Status.DEGRADED
        assert health.http_status == 200
        assert _check(health, "broker") == {
            "status": "healthy",
            "value": "reachable",
            "limit": None,
            "detail": "",
        }
        assert _check(health, "memory") == {
            "status": "degraded",
            "value": 0.85,
            "limit": 0.8,
            "detail": "85% of the memory limit in use",
        }
        assert _check(health, "queue:q:length") == {
            "status": "degraded",
            "value": 1500,
            "limit": 1000,
            "detail": "1500 jobs ready",
        }
        assert _check(health, "worker:w:error_rate") == {
            "status": "degraded",
            "value": 0.015,
            "limit": 0.01,
            "detail": "3 of 200 attempts failed",
        }
        assert _check(health, "worker:w:p95_latency")["status"] == "degraded"
        assert _check(health, "worker:w:claiming")["status"] == "healthy"  # claimed 12.5 s ago
        body = health.to_json(NOW)["workers"]["w"]
        assert {k: body[k] for k in ("queue", "state", "active", "processed", "failed")} == {
            "queue": "q",
            "state": "running",
            "active": 1,
            "processed": 500,
            "failed": 9,
        }
        assert (body["error_rate"], body["p95"], body["restarts"]) == (0.015, 7.5, 2)
        assert (body["last_error"], body["idle_for"]) == ("boom", 12.5)

    def test_an_unreachable_broker(self) -> None:
        health = assess(Snapshot(queues=None, broker_error="connection refused"), Thresholds(), NOW)
        assert (health.status, health.http_status) == (Status.UNHEALTHY, 503)
        assert _check(health, "broker") == {
            "status": "unhealthy",
            "value": "unreachable",
            "limit": None,
            "detail": "connection refused",
        }
        assert health.to_json(NOW)["queues"] is None
        silent = assess(Snapshot(queues=None), Thresholds(), NOW)
        assert _check(silent, "broker")["detail"] == "the broker did not answer"

    def test_unknown_memory_is_healthy(self) -> None:
        health = assess(Snapshot(memory=None), Thresholds(), NOW)
        assert _check(health, "memory") == {
            "status": "healthy",
            "value": None,
            "limit": 0.8,
            "detail": "unknown",
        }

    @pytest.mark.parametrize(
        ("worker", "queues", "stalled"),
        [
            (WorkerView(name="w", queue="q", last_claim=0.0), {"q": 1}, True),
            # concurrency unknown: never busy
            (WorkerView(name="w", queue="q", active=50, last_claim=0.0), {"q": 1}, True),
            (WorkerView(name="w", queue="q", active=3, concurrency=4, last_claim=0.0), {"q": 1}, True),
            (WorkerView(name="w", queue="q", active=4, concurrency=4, last_claim=0.0), {"q": 1}, False),
            (WorkerView(name="w", queue="q", last_claim=None), {"q": 1}, False),
            (WorkerView(name="w", queue="q", last_claim=0.0), {"q": 0}, False),
            (WorkerView(name="w", queue="q", last_claim=0.0), {"other": 5}, False),
            (WorkerView(name="w", queue="q", last_claim=NOW - 59.0), {"q": 1}, False),
        ],
    )  # fmt: skip
    def test_stall(self, worker: WorkerView, queues: dict[str, int], stalled: bool) -> None:
        stats = {name: QueueStats(queue=name, ready=ready) for name, ready in queues.items()}
        health = assess(Snapshot(workers={"w": worker}, queues=stats), Thresholds(), NOW)
        assert _check(health, "worker:w:claiming")["status"] == (
            "unhealthy" if stalled else "healthy"
        )
        assert (health.status is Status.UNHEALTHY) is stalled

    def test_severity_order(self) -> None:
        assert [s.severity for s in (Status.HEALTHY, Status.DEGRADED, Status.UNHEALTHY)] == [
            0,
            1,
            2,
        ]
        assert [s.value for s in Status] == ["healthy", "degraded", "unhealthy"]
        # One unhealthy check outweighs any number of degraded ones.
        workers = {
            "a": WorkerView(name="a", queue="q", state="restarting"),
            "b": WorkerView(name="b", queue="q", state="open"),
            "c": WorkerView(name="c", queue="q", state="crashed"),
        }
        assert assess(Snapshot(workers=workers), Thresholds(), NOW).status is Status.UNHEALTHY

    def test_reported_values_are_rounded_as_documented(self) -> None:
        worker = WorkerView(
            name="w", queue="q", finished=3, failed=1, p95=0.1234567, last_claim=NOW - 12.345678
        )
        health = assess(
            Snapshot(workers={"w": worker}, queues={"q": QueueStats(queue="q")}, memory=0.87654321),
            Thresholds(error_rate=0.5),
            NOW,
        )
        assert _check(health, "memory")["value"] == 0.8765
        assert _check(health, "memory")["detail"] == "88% of the memory limit in use"
        assert _check(health, "worker:w:error_rate")["value"] == 0.333333
        assert _check(health, "worker:w:p95_latency")["value"] == 0.1234567
        assert _check(health, "worker:w:claiming")["value"] == 12.346
        body = health.to_json(NOW)["workers"]["w"]
        assert (body["error_rate"], body["idle_for"]) == (0.333333, 12.346)

    def test_a_claim_stamped_after_now_is_not_idle(self) -> None:
        worker = WorkerView(name="w", queue="q", last_claim=NOW + 5.0)
        body = assess(Snapshot(workers={"w": worker}), Thresholds(), NOW).to_json(NOW)
        assert body["workers"]["w"]["idle_for"] == 0.0
        never = WorkerView(name="w", queue="q", last_claim=None)
        body = assess(Snapshot(workers={"w": never}), Thresholds(), NOW).to_json(NOW)
        assert body["workers"]["w"]["idle_for"] is None
