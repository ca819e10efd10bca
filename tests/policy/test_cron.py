"""Schedules as pure functions: next_fire agrees with a brute-force minute walk."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guild import Cron, Every, ScheduleError

UTC = dt.UTC
instants = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
)


def _field(low: int, high: int) -> st.SearchStrategy[str]:
    number = st.integers(low, high).map(str)
    step = st.tuples(st.integers(low, high), st.integers(1, 5)).map(
        lambda t: f"{t[0]}-{high}/{t[1]}"
    )
    rng = st.tuples(st.integers(low, high), st.integers(low, high)).map(
        lambda t: f"{min(t)}-{max(t)}"
    )
    return st.one_of(st.just("*"), number, step, rng, st.just(f"*/{max(1, (high - low) // 3)}"))


expressions = st.tuples(
    _field(0, 59),
    _field(0, 23),
    st.just("*") | _field(1, 28),
    _field(1, 12),
    st.just("*") | _field(0, 6),
).map(" ".join)


def _matches(cron: Cron, t: dt.datetime) -> bool:
    return (
        t.minute in cron.minutes
        and t.hour in cron.hours
        and t.month in cron.months
        and cron._day_matches(t.date())
    )


class TestCron:
    """next_fire is the first matching minute strictly after the given instant."""

    @settings(max_examples=200)
    @given(expressions, instants)
    def test_next_fire_matches_and_is_after(self, expression: str, after: dt.datetime) -> None:
        cron = Cron(expression)
        fire = cron.next_fire(after)
        assert fire > after
        assert fire.second == 0 and fire.microsecond == 0
        assert _matches(cron, fire)

    @settings(max_examples=60)
    @given(st.tuples(_field(0, 59), _field(0, 23)).map(lambda t: f"{t[0]} {t[1]} * * *"), instants)
    def test_no_matching_minute_is_skipped(self, expression: str, after: dt.datetime) -> None:
        cron = Cron(expression)
        fire = cron.next_fire(after)
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        while t < fire:
            assert not _matches(cron, t)
            t += dt.timedelta(minutes=1)

    def test_either_day_field_fires_when_both_are_restricted(self) -> None:
        cron = Cron("0 0 13 * fri")  # the 13th, or any Friday (Vixie cron)
        fire = cron.next_fire(dt.datetime(2026, 11, 1, tzinfo=UTC))
        assert fire == dt.datetime(2026, 11, 6, tzinfo=UTC)  # a Friday before the 13th

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("* * * *", "expected 5 fields"),
            ("60 * * * *", "minute: '60' is not in 0-59"),
            ("* * * foo *", "month: 'foo'"),
            ("5-1 * * * *", "runs backwards"),
            ("*/0 * * * *", "step '0'"),
            ("0 0 30 2 *", "never fires"),
        ],
    )
    def test_bad_expressions_say_why(self, expression: str, message: str) -> None:
        with pytest.raises(ScheduleError, match=message):
            Cron(expression).next_fire(dt.datetime(2026, 1, 1, tzinfo=UTC))


class TestEvery:
    """Interval ticks are aligned to the epoch, so every process agrees on them."""

    @given(st.floats(0.5, 100_000), instants)
    def test_next_tick_is_aligned_and_within_one_interval(
        self, seconds: float, after: dt.datetime
    ) -> None:
        fire = Every(seconds).next_fire(after)
        assert after < fire <= after + dt.timedelta(seconds=seconds) + dt.timedelta(microseconds=2)

    def test_rejects_non_positive(self) -> None:
        with pytest.raises(ScheduleError, match="positive"):
            Every(0)
