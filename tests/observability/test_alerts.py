"""docs/alerts.yml: valid rule groups, the seed's thresholds, and only metrics guild exports."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from guild import QueueStats
from guild.observability import Outcome, PrometheusInstrument, Thresholds
from guild.observability._feature_events import LoopStalled

from .helpers import finished, state

RULES = Path(__file__).resolve().parents[2] / "docs" / "alerts.yml"


def rules() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return {rule["alert"]: rule for group in document["groups"] for rule in group["rules"]}


def exported_names() -> set[str]:
    metrics = PrometheusInstrument("a")
    metrics.job_finished(finished("w", Outcome.DEAD))
    metrics.worker_state_changed(state("w", "running"))
    metrics.set_queues({"q": QueueStats(queue="q")})
    metrics.set_memory(0.5)
    metrics.loop_stalled(LoopStalled(stalled=6.0, jobs={}, at=0.0))
    return set(re.findall(r"^(guild_\w+)", metrics.render().decode(), re.MULTILINE))


class TestAlertRules:
    """The rules file is what Prometheus expects and says what the seed asks."""

    def test_every_rule_is_complete(self) -> None:
        document = yaml.safe_load(RULES.read_text())
        assert [group["name"] for group in document["groups"]] == ["guild"]
        for name, rule in rules().items():
            assert set(rule) == {"alert", "expr", "for", "labels", "annotations"}, name
            assert re.fullmatch(r"\d+[smh]", rule["for"]), name
            assert rule["labels"]["severity"] in {"warning", "critical"}, name
            assert rule["annotations"]["summary"], name
            assert rule["expr"].count("(") == rule["expr"].count(")"), name

    @pytest.mark.parametrize(
        ("alert", "threshold"),
        [
            ("GuildHighErrorRate", f"> {Thresholds().error_rate}"),
            ("GuildSlowJobs", f"> {Thresholds().p95_latency:g}"),
            ("GuildHighMemory", f"> {Thresholds().memory}"),
            ("GuildQueueBacklog", f"> {Thresholds().queue_length}"),
        ],
    )
    def test_the_seed_thresholds_match_health(self, alert: str, threshold: str) -> None:
        assert threshold in rules()[alert]["expr"]

    def test_a_blocked_loop_warns_at_its_first_stall(self) -> None:
        rule = rules()["GuildLoopStalled"]
        # A counter: its increase, not its value (which only grows), and any stall counts.
        assert "increase(guild_loop_stalls_total[" in rule["expr"]
        assert rule["expr"].rstrip().endswith("> 0")
        assert rule["labels"]["severity"] == "warning"

    def test_work_stopped_alerts_are_critical(self) -> None:
        found = rules()
        for alert in ("GuildCircuitOpen", "GuildWorkerDown", "GuildBrokerUnreachable"):
            assert found[alert]["labels"]["severity"] == "critical"

    def test_every_metric_used_is_exported(self) -> None:
        exported = exported_names()
        used = {
            name.removesuffix("_bucket").removesuffix("_total")
            for rule in rules().values()
            for name in re.findall(r"\bguild_\w+", rule["expr"])
        }
        known = {name.removesuffix("_bucket").removesuffix("_total") for name in exported}
        assert used <= known, used - known
