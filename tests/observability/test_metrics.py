"""Prometheus metrics: counts that match the events, one registry per app, many processes."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.parser import text_string_to_metric_families

from guild import QueueStats
from guild.observability import (
    DURATION_BUCKETS,
    Outcome,
    PrometheusInstrument,
    RateLimited,
    SandboxRan,
)

from .helpers import finished, state


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of an exposition, keyed by name and labels."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, frozenset(labels.items()))]


class TestJobCounters:
    """Counters and the duration histogram match the attempts emitted."""

    def test_counts_match_the_events(self) -> None:
        metrics = PrometheusInstrument("shop")
        durations = [0.002, 0.02, 0.2, 2.0, 20.0]
        for d in durations:
            metrics.job_finished(finished("emails", Outcome.DONE, d))
        metrics.job_finished(finished("emails", Outcome.RETRY))
        metrics.job_finished(finished("emails", Outcome.RETRY))
        metrics.job_finished(finished("emails", Outcome.DEAD))
        metrics.job_finished(finished("emails", Outcome.RELEASED))
        text = metrics.render().decode()
        labels = {"app": "shop", "worker": "emails"}
        assert value(text, "guild_jobs_processed_total", **labels) == 5
        assert value(text, "guild_jobs_failed_total", **labels) == 3
        assert value(text, "guild_jobs_retried_total", **labels) == 2
        assert value(text, "guild_jobs_dead_total", **labels) == 1
        assert value(text, "guild_job_duration_seconds_count", **labels) == 8
        assert math.isclose(
            value(text, "guild_job_duration_seconds_sum", **labels), sum(durations) + 0.03
        )
        assert value(text, "guild_job_duration_seconds_bucket", le="0.025", **labels) == 5

    def test_repeated_scrapes_add_only_what_is_new(self) -> None:
        metrics = PrometheusInstrument("shop")
        metrics.job_finished(finished("a"))
        metrics.render()
        metrics.job_finished(finished("a"))
        text = metrics.render().decode()
        assert value(text, "guild_jobs_processed_total", app="shop", worker="a") == 2
        assert value(text, "guild_job_duration_seconds_count", app="shop", worker="a") == 2

    @pytest.mark.parametrize("duration", [0.0, 0.001, 0.0011, 4.99, 5.0, 600.0, 601.0])
    def test_flushed_buckets_equal_observed_buckets(self, duration: float) -> None:
        """The flush writes prometheus-client's histogram internals as observe() would."""
        metrics = PrometheusInstrument("a")
        metrics.job_finished(finished("w", Outcome.DONE, duration))
        flushed = metrics.render().decode()
        registry = CollectorRegistry()
        reference = Histogram(
            "guild_job_duration_seconds",
            "x",
            ("app", "worker"),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        reference.labels("a", "w").observe(duration)
        from prometheus_client import generate_latest

        expected = samples(generate_latest(registry).decode())
        got = samples(flushed)
        for key, number in expected.items():
            if key[0].startswith("guild_job_duration_seconds") and not key[0].endswith("_created"):
                assert got[key] == number, key

    def test_active_jobs_come_from_the_app(self) -> None:
        metrics = PrometheusInstrument("a", active=lambda: {"w": 3})
        assert value(metrics.render().decode(), "guild_jobs_active", app="a", worker="w") == 3


class TestRegistries:
    """Two apps in one process keep separate registries."""

    def test_two_apps_do_not_collide(self) -> None:
        first, second = PrometheusInstrument("one"), PrometheusInstrument("two")
        first.job_finished(finished("w"))
        for _ in range(3):
            second.job_finished(finished("w"))
        assert (
            value(first.render().decode(), "guild_jobs_processed_total", app="one", worker="w") == 1
        )
        assert (
            value(second.render().decode(), "guild_jobs_processed_total", app="two", worker="w")
            == 3
        )
        assert first.registry is not second.registry


class TestWorkerAndQueueMetrics:
    """Supervisor states, restarts, queue depth, limiter waits and sandbox runs."""

    def test_one_state_is_current(self) -> None:
        metrics = PrometheusInstrument("a")
        for name in ("starting", "running", "crashed", "restarting", "running"):
            metrics.worker_state_changed(state("w", name))
        text = metrics.render().decode()
        current = {
            dict(labels)["state"]
            for (name, labels), number in samples(text).items()
            if name == "guild_worker_state" and number == 1
        }
        assert current == {"running"}
        assert value(text, "guild_worker_restarts_total", app="a", worker="w") == 1

    def test_queue_depth_and_broker_up(self) -> None:
        metrics = PrometheusInstrument("a")
        metrics.set_queues({"q": QueueStats(queue="q", ready=7, delayed=2, in_flight=1, dead=4)})
        text = metrics.render().decode()
        assert value(text, "guild_queue_jobs", app="a", queue="q", status="ready") == 7
        assert value(text, "guild_queue_jobs", app="a", queue="q", status="dead") == 4
        assert value(text, "guild_broker_up", app="a") == 1
        metrics.set_queues(None)
        assert value(metrics.render().decode(), "guild_broker_up", app="a") == 0

    def test_rate_limiter_and_sandbox(self) -> None:
        metrics = PrometheusInstrument("a")
        metrics.rate_limited(RateLimited(limiter="llm", waited=0.5))
        metrics.sandbox_ran(SandboxRan(argv=("ls",), exit_code=0, duration=0.1))
        metrics.sandbox_ran(SandboxRan(argv=("false",), exit_code=1, duration=0.1))
        metrics.sandbox_ran(SandboxRan(argv=("sleep",), exit_code=None, duration=9.0))
        metrics.sandbox_ran(
            SandboxRan(argv=("sh",), exit_code=None, duration=0.0, refused_rule="shell")
        )
        text = metrics.render().decode()
        assert value(text, "guild_ratelimit_wait_seconds_count", app="a", limiter="llm") == 1
        for result in ("ok", "failed", "killed", "refused"):
            assert value(text, "guild_sandbox_runs_total", app="a", result=result) == 1
        assert value(text, "guild_sandbox_refusals_total", app="a", rule="shell") == 1
        assert value(text, "guild_sandbox_duration_seconds_count", app="a") == 3
