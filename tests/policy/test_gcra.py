"""GCRA admission as a pure function: never more than burst + t/interval in any window."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guild.ratelimit import Rate, admit

rates = st.builds(
    Rate,
    rate=st.floats(0.1, 1000),
    period=st.floats(0.01, 100),
    burst=st.integers(1, 20),
)
gaps = st.lists(st.floats(0, 5), min_size=1, max_size=200)


def _run(rate: Rate, gaps: list[float]) -> list[tuple[float, bool, float]]:
    tat, now, out = -math.inf, 0.0, []
    for gap in gaps:
        now += gap
        decision = admit(tat, now, rate)
        tat = decision.tat
        out.append((now, decision.admitted, decision.retry_after))
    return out


class TestAdmit:
    """The limit holds in every window, and a refusal says exactly when to come back."""

    @given(rates, gaps)
    def test_no_window_admits_more_than_burst_plus_rate(
        self, rate: Rate, gaps: list[float]
    ) -> None:
        admitted = [t for t, ok, _ in _run(rate, gaps) if ok]
        for i, start in enumerate(admitted):
            for j in range(i, len(admitted)):
                window = admitted[j] - start
                assert j - i + 1 <= rate.burst + window / rate.interval + 1e-6

    @given(rates, gaps)
    def test_refusal_retry_after_is_exact(self, rate: Rate, gaps: list[float]) -> None:
        tat = -math.inf
        now = 0.0
        for gap in gaps:
            now += gap
            decision = admit(tat, now, rate)
            if not decision.admitted:
                assert decision.retry_after > 0
                assert decision.tat == tat  # a refusal changes nothing
                later = admit(tat, now + decision.retry_after, rate)
                assert later.admitted
            tat = decision.tat

    @given(rates, st.floats(0, 1e6))
    def test_fresh_limiter_admits_a_full_burst_at_once(self, rate: Rate, now: float) -> None:
        tat = -math.inf
        for _ in range(rate.burst):
            decision = admit(tat, now, rate)
            assert decision.admitted
            tat = decision.tat
        assert not admit(tat, now, rate).admitted

    @given(rates)
    def test_steady_caller_at_the_rate_is_never_refused(self, rate: Rate) -> None:
        tat, now = -math.inf, 0.0
        for _ in range(50):
            decision = admit(tat, now, rate)
            assert decision.admitted
            tat = decision.tat
            now += rate.interval

    def test_invalid_rates_cannot_be_built(self) -> None:
        with pytest.raises(ValueError, match="rate"):
            Rate(rate=0)
        with pytest.raises(ValueError, match="burst"):
            Rate(rate=1, burst=0)
