"""True quantiles of recent durations, checked against a brute-force definition."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild.observability import JobCounts, Monitor, Thresholds
from guild.observability._quantiles import SAMPLE_SIZE, quantile_of, rank, summary
from guild.observability._tally import WorkerCounts

from .helpers import finished

PERCENTS = {"p50": 50, "p95": 95, "p99": 99}


def brute(values: list[float], percent: int) -> float:
    """The smallest observed value with at least percent% of the values at or below it,
    in exact integer arithmetic (no float product, no sort-and-index)."""
    n = len(values)
    return min(v for v in values if sum(x <= v for x in values) * 100 >= percent * n)


class TestDefinition:
    def test_known_inputs(self) -> None:
        # 1..100: the nearest rank of p is p itself.
        assert summary(float(i) for i in range(1, 101)) == {"p50": 50.0, "p95": 95.0, "p99": 99.0}
        # 1..10: p50 is the 5th value, p95 and p99 the 10th.
        assert summary(float(i) for i in range(10, 0, -1)) == {
            "p50": 5.0,
            "p95": 10.0,
            "p99": 10.0,
        }
        # One slow attempt among 99 fast ones is the p99's business only.
        assert summary([0.02] * 99 + [3.0]) == {"p50": 0.02, "p95": 0.02, "p99": 0.02}
        assert summary([0.02] * 98 + [3.0, 3.0]) == {"p50": 0.02, "p95": 0.02, "p99": 3.0}
        assert summary([]) == {"p50": None, "p95": None, "p99": None}

    def test_rank_resists_float_products(self) -> None:
        assert 0.07 * 100 != 7  # the product is 7.000000000000001
        assert rank(0.07, 100) == 7
        assert rank(0.0, 5) == 1 and rank(1.0, 5) == 5

    @pytest.mark.parametrize(("q", "n"), [(-0.1, 3), (1.5, 3), (0.5, 0)])
    def test_bad_arguments(self, q: float, n: int) -> None:
        with pytest.raises(ValueError, match="quantile"):
            rank(q, n)

    @given(st.lists(st.integers(-1000, 1000).map(float), min_size=1, max_size=300))
    def test_matches_brute_force(self, values: list[float]) -> None:
        got = summary(values)
        for name, percent in PERCENTS.items():
            assert got[name] == brute(values, percent)
            assert quantile_of(values, percent / 100) == brute(values, percent)

    @given(st.lists(st.floats(0, 100), min_size=1, max_size=50), st.integers(0, 100))
    def test_any_percent(self, values: list[float], percent: int) -> None:
        q = float(Fraction(percent, 100))
        assert quantile_of(values, q) == brute(values, percent)


class TestRecent:
    def test_ring_keeps_the_newest(self) -> None:
        counts = WorkerCounts()
        for i in range(SAMPLE_SIZE + 10):
            counts.recent.append(float(i))
        assert counts.last(3) == [
            float(SAMPLE_SIZE + 7),
            float(SAMPLE_SIZE + 8),
            float(SAMPLE_SIZE + 9),
        ]
        assert len(counts.last(10 * SAMPLE_SIZE)) == SAMPLE_SIZE
        assert counts.last(0) == []

    def test_monitor_reads_the_window_only(self) -> None:
        now = [0.0]
        counts = JobCounts()
        monitor = Monitor(counts, Thresholds(window=60), clock=lambda: now[0])
        for _ in range(50):
            counts.job_finished(finished("w", duration=9.0))  # slow, long ago
        monitor.sample()
        now[0] = 120.0
        monitor.sample()
        durations = [float(d) / 1000 for d in range(1, 21)]  # 1 ms .. 20 ms, in the window
        for d in durations:
            counts.job_finished(finished("w", duration=d))
        view = monitor.snapshot(queues={})[0].workers["w"]
        assert (view.p50, view.p95, view.p99) == (0.010, 0.019, 0.020)
        assert monitor.recent()["w"] == durations
