"""Health for outages, lost data and workers that stopped: the pure policy, and
the checks that feed it (Redis' config, a SQLite file replaced under a broker)."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

import guild
from guild import OutageBackoff
from guild.brokers import BrokerIssue
from guild.brokers._redis_checks import DataLoss, config_issues
from guild.observability import ObservabilityApp, observe
from guild.observability._health import Snapshot, Status, Thresholds, WorkerView, assess

# Written out: the states the seed's supervisor emits and the verdict each gets.
KNOWN_STATES = {
    "starting": Status.HEALTHY,
    "running": Status.HEALTHY,
    "closed": Status.HEALTHY,
    "crashed": Status.DEGRADED,
    "restarting": Status.DEGRADED,
    "half_open": Status.DEGRADED,
    "draining": Status.DEGRADED,
    "open": Status.UNHEALTHY,
    "gave_up": Status.UNHEALTHY,
    "stopped": Status.UNHEALTHY,
    "exited": Status.UNHEALTHY,
}


def _judge(*workers: WorkerView, issues: tuple[BrokerIssue, ...] = ()) -> dict[str, Status]:
    snapshot = Snapshot(workers={w.name: w for w in workers}, issues=issues)
    health = assess(snapshot, Thresholds(), now=100.0)
    checks = {c.name: c.status for c in health.checks}
    checks["overall"] = health.status
    return checks


class TestOutageBackoff:
    """The wait between attempts to reach a broker that is away."""

    def test_default_waits(self) -> None:
        policy = OutageBackoff()
        # 50 ms doubling, capped at 1 s; rand 0.5 with jitter 0.5 shortens by a quarter.
        assert [policy.delay(n, 0.0) for n in (1, 2, 3, 4, 5, 6, 7, 1000)] == [
            0.05,
            0.1,
            0.2,
            0.4,
            0.8,
            1.0,
            1.0,
            1.0,
        ]
        assert policy.delay(6, 0.5) == 0.75

    @given(failures=st.integers(1, 10_000), rand=st.floats(0.0, 1.0, exclude_max=True))
    def test_never_longer_than_the_cap(self, failures: int, rand: float) -> None:
        # The cap bounds how long a worker stays idle once its broker is back.
        assert 0.0 < OutageBackoff().delay(failures, rand) <= 1.0

    @given(
        failures=st.integers(1, 200),
        rand=st.floats(0.0, 1.0, exclude_max=True),
        maximum=st.floats(0.01, 60.0),
    )
    def test_grows_with_failures(self, failures: int, rand: float, maximum: float) -> None:
        policy = OutageBackoff(maximum=maximum)
        assert policy.delay(failures, rand) <= policy.delay(failures + 1, rand)

    @pytest.mark.parametrize(
        "options",
        [{"initial": 0.0}, {"maximum": float("inf")}, {"jitter": 1.0}, {"multiplier": 0.5}],
    )
    def test_rejects_nonsense(self, options: dict[str, float]) -> None:
        with pytest.raises(ValueError):
            OutageBackoff(**options)


class TestWorkerHealth:
    """A worker that cannot reach its broker, or is not running, is never healthy."""

    def test_broker_away_is_unhealthy_with_the_reason(self) -> None:
        away = WorkerView(name="w", queue="q", broker_error="BrokerUnavailable: refused")
        checks = _judge(away)
        assert checks["worker:w:broker"] is Status.UNHEALTHY
        assert checks["overall"] is Status.UNHEALTHY
        health = assess(Snapshot(workers={"w": away}), Thresholds(), now=0.0)
        body = health.to_json(0.0)
        assert body["checks"]["worker:w:broker"]["detail"] == "BrokerUnavailable: refused"
        assert body["workers"]["w"]["broker_error"] == "BrokerUnavailable: refused"
        assert health.http_status == 503

    def test_broker_back_is_healthy(self) -> None:
        assert _judge(WorkerView(name="w", queue="q"))["overall"] is Status.HEALTHY

    @pytest.mark.parametrize(("state", "expected"), sorted(KNOWN_STATES.items()))
    def test_each_state(self, state: str, expected: Status) -> None:
        assert _judge(WorkerView(name="w", queue="q", state=state))["worker:w:state"] is expected

    @given(st.text(min_size=1, max_size=20).filter(lambda s: s not in KNOWN_STATES))
    def test_an_unknown_state_is_unhealthy(self, state: str) -> None:
        checks = _judge(WorkerView(name="w", queue="q", state=state))
        assert checks["worker:w:state"] is Status.UNHEALTHY

    @pytest.mark.parametrize("state", ["running", "closed"])
    def test_a_running_worker_whose_task_ended_is_unhealthy(self, state: str) -> None:
        checks = _judge(WorkerView(name="w", queue="q", state=state, alive=False))
        assert checks["worker:w:state"] is Status.UNHEALTHY

    def test_a_starting_worker_is_registered_a_moment_later(self) -> None:
        checks = _judge(WorkerView(name="w", queue="q", state="starting", alive=False))
        assert checks["worker:w:state"] is Status.HEALTHY

    @given(
        states=st.lists(st.sampled_from(sorted(KNOWN_STATES)), min_size=1, max_size=6),
        away=st.lists(st.booleans(), min_size=6, max_size=6),
        alive=st.lists(st.booleans(), min_size=6, max_size=6),
    )
    def test_healthy_only_when_every_worker_runs_and_reaches_the_broker(
        self, states: list[str], away: list[bool], alive: list[bool]
    ) -> None:
        workers = [
            WorkerView(
                name=f"w{i}",
                queue="q",
                state=state,
                broker_error="BrokerUnavailable: x" if away[i] else None,
                alive=alive[i],
            )
            for i, state in enumerate(states)
        ]
        every_fine = all(
            KNOWN_STATES[w.state] is Status.HEALTHY
            and w.broker_error is None
            and (w.alive or w.state == "starting")
            for w in workers
        )
        assert (_judge(*workers)["overall"] is Status.HEALTHY) == every_fine


class TestBrokerIssues:
    """What a broker reports about its backend becomes a ``broker:<name>`` check."""

    @pytest.mark.parametrize(
        ("severity", "expected"),
        [
            ("info", Status.HEALTHY),
            ("degraded", Status.DEGRADED),
            ("unhealthy", Status.UNHEALTHY),
        ],
    )
    def test_severity(self, severity: str, expected: Status) -> None:
        issue = BrokerIssue(name="thing", severity=severity, detail="d")  # type: ignore[arg-type]
        checks = _judge(issues=(issue,))
        assert checks["broker:thing"] is expected
        assert checks["overall"] is expected


class TestRedisConfig:
    """Redis' durability settings, judged."""

    @pytest.mark.parametrize(
        ("config", "expected"),
        [
            ({"appendonly": "yes", "save": "", "maxmemory-policy": "noeviction"}, []),
            ({"appendonly": "no", "save": "3600 1 300 100", "maxmemory-policy": "noeviction"}, []),
            (
                {"appendonly": "no", "save": "", "maxmemory-policy": "noeviction"},
                [("persistence", "degraded")],
            ),
            (
                {"appendonly": "yes", "save": "", "maxmemory-policy": "allkeys-lru"},
                [("eviction", "degraded")],
            ),
            (
                {"appendonly": "no", "save": " ", "maxmemory-policy": "volatile-ttl"},
                [("persistence", "degraded"), ("eviction", "degraded")],
            ),
            (None, [("config", "info")]),
        ],
    )
    def test_table(self, config: dict[str, str] | None, expected: list[tuple[str, str]]) -> None:
        found = config_issues(config, None if config else "unknown command 'CONFIG'")
        assert [(i.name, i.severity) for i in found] == expected

    def test_a_refusal_is_named(self) -> None:
        (issue,) = config_issues(None, "ERR unknown command 'CONFIG'")
        assert "unknown command 'CONFIG'" in issue.detail

    def test_data_loss_names_the_queue_and_the_count(self) -> None:
        last = guild.QueueStats(queue="mail", ready=200, delayed=10, in_flight=50, done=7, dead=1)
        loss = DataLoss(
            queue="mail", how="its consumer group vanished", at=1000.0, last=last, last_at=990.0
        )
        assert loss.lost == 260
        issue = loss.issue()
        assert (issue.name, issue.severity) == ("data_loss:mail", "unhealthy")
        assert "'mail'" in issue.detail and "about 260 jobs" in issue.detail
        assert "counted 10s before" in issue.detail
        unknown = DataLoss(queue="mail", how="x", at=1000.0)
        assert unknown.lost is None and "unknown number" in unknown.describe()


class TestSqliteFileReplaced:
    """A SQLite file deleted or replaced under an open broker is refused, by path."""

    @pytest.mark.parametrize("how", ["deleted", "replaced"])
    async def test_every_call_refused_naming_the_path(self, tmp_path: Path, how: str) -> None:
        path = tmp_path / "jobs.db"
        with trio.fail_after(20):
            async with guild.open_broker(f"sqlite:{path}") as broker:
                await broker.enqueue([guild.Job(queue="q", payload=1)])
                assert (await broker.stats(["q"]))["q"].ready == 1
                os.unlink(path)
                if how == "replaced":
                    sqlite3.connect(path).close()  # a fresh, empty database at the path
                with pytest.raises(guild.BrokerFileReplaced) as caught:
                    await broker.stats(["q"])
                assert caught.value.path == str(path)
                assert str(path) in str(caught.value) and how in str(caught.value)
                # Sticky: claims and enqueues refuse too, with no wait for the next check.
                with pytest.raises(guild.BrokerFileReplaced):
                    await broker.claim("q", consumer="c", limit=1, lease=5.0)
                with pytest.raises(guild.BrokerFileReplaced):
                    await broker.enqueue([guild.Job(queue="q", payload=2)])

    async def test_the_app_stops_and_health_names_the_path(self, tmp_path: Path) -> None:
        path = tmp_path / "jobs.db"
        app = guild.Guild(
            "replaced",
            supervision=guild.SupervisorOptions(
                max_restarts=2, period=60.0, backoff=guild.Backoff(initial=0.01, maximum=0.01)
            ),
        )

        @app.worker("q", claim_wait=0.05)
        async def work(job: guild.Job) -> object:
            return job.payload

        asgi = ObservabilityApp(app, observe(app, logs=False))
        seen: list[tuple[Status, str]] = []

        async def run_and_delete(broker: guild.Broker) -> None:
            async with trio.open_nursery() as nursery:
                await nursery.start(app.run, broker)
                for delete in (False, True):
                    if delete:
                        os.unlink(path)
                    health, _ = await asgi.health()
                    broker_check = next(c for c in health.checks if c.name == "broker")
                    seen.append((health.status, broker_check.detail))

        with trio.fail_after(30):
            async with guild.open_broker(f"sqlite:{path}") as broker:
                with pytest.raises(BaseExceptionGroup) as gave_up:
                    await run_and_delete(broker)
                assert seen[0] == (Status.HEALTHY, "")
                assert seen[1][0] is Status.UNHEALTHY and str(path) in seen[1][1]
                assert gave_up.group_contains(guild.GaveUp, match=re.escape(str(path)))
