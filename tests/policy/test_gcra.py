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
                assert j - i + 1 <= rate.burst + window * rate.rate / rate.period + 1e-6

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
            now += rate.period / rate.rate  # the spacing, computed here

    def test_invalid_rates_cannot_be_built(self) -> None:
        with pytest.raises(ValueError, match="rate"):
            Rate(rate=0)
        with pytest.raises(ValueError, match="burst"):
            Rate(rate=1, burst=0)


class TestWrittenOut:
    """Defaults, derived figures and one schedule, written out rather than read back."""

    def test_defaults_are_one_second_and_no_burst(self) -> None:
        rate = Rate(rate=2)
        assert (rate.period, rate.burst, rate.interval, rate.tolerance) == (1.0, 1, 0.5, 0.0)
        wide = Rate(rate=4, period=2.0, burst=3)
        assert (wide.interval, wide.tolerance) == (0.5, 1.0)

    def test_a_schedule(self) -> None:
        rate = Rate(rate=2)  # one every 0.5 s, no burst
        first = admit(-math.inf, 10.0, rate)
        assert (first.admitted, first.tat, first.retry_after) == (True, 10.5, 0.0)
        again = admit(first.tat, 10.0, rate)
        assert (again.admitted, again.tat, again.retry_after) == (False, 10.5, 0.5)
        on_time = admit(first.tat, 10.5, rate)
        assert (on_time.admitted, on_time.tat) == (True, 11.0)
        # After an idle spell the state restarts from now, it does not bank credit.
        idle = admit(on_time.tat, 20.0, rate)
        assert (idle.admitted, idle.tat) == (True, 20.5)
        assert not admit(idle.tat, 20.1, rate).admitted

    def test_a_burst_of_three(self) -> None:
        rate = Rate(rate=1, burst=3)
        tat = -math.inf
        for expected in (1.0, 2.0, 3.0):
            decision = admit(tat, 0.0, rate)
            assert (decision.admitted, decision.tat) == (True, expected)
            tat = decision.tat
        refused = admit(tat, 0.0, rate)
        assert (refused.admitted, refused.retry_after) == (False, 1.0)
        assert admit(tat, 1.0, rate).tat == 4.0

    def test_rounding_slack_is_burst_plus_four_units_in_the_last_place(self) -> None:
        # A caller back exactly when told may be a few float roundings early: up to
        # (burst + 4) ulps of the largest of 1, |now| and |tat| are forgiven, no more.
        one = Rate(rate=1.0)  # burst 1: 5 ulps
        ulp = math.ulp(1000.0)
        assert admit(1000.0 + 5 * ulp, 1000.0, one).admitted
        assert not admit(1000.0 + 6 * ulp, 1000.0, one).admitted
        # Below 1 the unit is ulp(1.0), not the smaller ulp of now or tat.
        unit = math.ulp(1.0)
        assert admit(0.5 + 5 * unit, 0.5, one).admitted
        assert not admit(0.5 + 6 * unit, 0.5, one).admitted
        three = Rate(rate=1.0, burst=3)  # tolerance 2 s, 7 ulps
        assert admit(1002.0 + 7 * ulp, 1000.0, three).admitted
        late = admit(1002.0 + 8 * ulp, 1000.0, three)
        assert (late.admitted, late.retry_after) == (False, 8 * ulp)

    @pytest.mark.parametrize(
        ("bad", "message"),
        [
            ({"rate": 0}, "rate must be a positive finite number"),
            ({"rate": -1}, "rate must be a positive finite number"),
            ({"rate": math.inf}, "rate must be a positive finite number"),
            ({"rate": math.nan}, "rate must be a positive finite number"),
            ({"rate": 1, "period": 0}, "period must be a positive finite number"),
            ({"rate": 1, "period": math.inf}, "period must be a positive finite number"),
            ({"rate": 1, "burst": 0}, "burst"),
        ],
    )
    def test_validators(self, bad: dict[str, float], message: str) -> None:
        with pytest.raises(ValueError, match=message):
            Rate(**bad)  # type: ignore[arg-type]
