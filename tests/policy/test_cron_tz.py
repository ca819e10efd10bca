"""Cron in a time zone: next_fire agrees with a brute-force walk through UTC.

The reference walks minute by minute in UTC, reads each minute's wall time in
the zone (zoneinfo), and keeps the latest wall time the clock has shown. A
minute fires when a wall time it newly reaches matches the expression: the wall
time itself, or one the clock skipped on the way to it (a spring-forward jump).
A wall time shown again after a fall-back is not new, so it fires no second time.
The expressions come from tests/policy/test_cron.py, which knows what each one
means without reading the parser back.
"""

from __future__ import annotations

import datetime as dt
import functools
import zoneinfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guild
from guild import Cron, ScheduleError

from .test_cron import Expr, Field, _field, expressions

UTC = dt.UTC
MINUTE = dt.timedelta(minutes=1)
DST_ZONES = ("Europe/Paris", "America/New_York", "Australia/Lord_Howe")
# Longer than any of these zones' shifts (an hour; Lord Howe's is 30 minutes), so
# the walk knows the wall times shown just before the window when it starts.
LOOK_BACK = dt.timedelta(hours=3)
WINDOW = dt.timedelta(hours=26)


def _wall(instant: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    return instant.astimezone(zone).replace(tzinfo=None, fold=0)


def _matches(expr: Expr, wall: dt.datetime) -> bool:
    return expr.day_matches(wall.date()) and wall.hour in expr.hours and wall.minute in expr.minutes


def reference_fires(
    expr: Expr, zone: zoneinfo.ZoneInfo, start: dt.datetime, end: dt.datetime
) -> list[dt.datetime]:
    """Every firing instant in (start, end], minute by minute in UTC."""
    u = start.replace(second=0, microsecond=0) - LOOK_BACK
    latest = _wall(u, zone)
    fires = []
    while u < end:
        u += MINUTE
        wall = _wall(u, zone)
        if wall <= latest:
            continue  # shown before: it had its chance then
        reached = latest + MINUTE
        hit = False
        while reached <= wall:
            hit = hit or _matches(expr, reached)
            reached += MINUTE
        latest = wall
        if hit and start < u <= end:
            fires.append(u)
    return fires


def implementation_fires(cron: Cron, start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    fires = []
    t = start
    while (t := cron.next_fire(t)) <= end:
        fires.append(t)
    return fires


@functools.cache
def transitions(name: str) -> tuple[dt.datetime, ...]:
    """The instants (to the minute) the zone's UTC offset changes, 2000 to 2040."""
    zone = zoneinfo.ZoneInfo(name)

    def offset(t: dt.datetime) -> dt.timedelta | None:
        return t.astimezone(zone).utcoffset()

    found = []
    day = dt.datetime(2000, 1, 1, tzinfo=UTC)
    while day.year < 2040:
        following = day + dt.timedelta(days=1)
        if offset(day) != offset(following):
            low, high = day, following  # offset(low) is the old one, offset(high) the new
            while high - low > MINUTE:
                middle = low + (high - low) / 2
                middle = middle.replace(second=0, microsecond=0)
                if offset(middle) == offset(day):
                    low = middle
                else:
                    high = middle
            found.append(high)
        day = following
    return tuple(found)


@st.composite
def near_transition(draw: st.DrawFn) -> tuple[str, dt.datetime]:
    name = draw(st.sampled_from(DST_ZONES))
    jump = draw(st.sampled_from(transitions(name)))
    # Hypothesis favours small integers: a start within the changed hour needs
    # its own draw, and a start long before the jump counts from the far end.
    minutes = draw(st.integers(-90, 90) | st.integers(0, 24 * 60).map(lambda m: m - 20 * 60))
    microseconds = draw(st.integers(0, 60_000_000 - 1))
    return name, jump + dt.timedelta(minutes=minutes, microseconds=microseconds)


anywhere_in_kolkata = st.tuples(
    st.just("Asia/Kolkata"),
    st.datetimes(
        min_value=dt.datetime(2000, 1, 1),
        max_value=dt.datetime(2040, 1, 1),
        timezones=st.just(UTC),
    ),
)

# Expressions that fire in the small hours on most days, where the clocks change.
small_hours = st.tuples(
    _field(0, 59),
    st.sets(st.integers(0, 4), min_size=1).map(
        lambda hours: Field(",".join(map(str, sorted(hours))), set(hours))
    )
    | st.just(Field("*", set(range(24)))),
    st.just(Field("*", set(range(1, 32)))),
    st.just(Field("*", set(range(1, 13)))),
    st.just(Field("*", set(range(7)))) | _field(0, 7),
).map(Expr)


class TestAgainstTheReference:
    @settings(max_examples=250, deadline=None)
    @given(small_hours | expressions, near_transition() | anywhere_in_kolkata)
    def test_every_fire_in_a_day_around_a_transition(
        self, expr: Expr, at: tuple[str, dt.datetime]
    ) -> None:
        if not expr.fires_ever():
            return  # refused when built: tests/policy/test_cron.py
        name, start = at
        cron = Cron(expr.text, tz=name)
        end = start + WINDOW
        assert implementation_fires(cron, start, end) == reference_fires(
            expr, zoneinfo.ZoneInfo(name), start, end
        )

    def test_the_transitions_are_found(self) -> None:
        # Two a year in each zone with daylight saving time; the walk depends on them.
        for name in DST_ZONES:
            assert len(transitions(name)) == 80, name
        assert transitions("Asia/Kolkata") == ()


def _utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=UTC)


class TestWrittenOut:
    @pytest.mark.parametrize(
        ("expression", "tz", "after", "fires"),
        [
            # Paris springs forward at 02:00 CET on 2026-03-29: 02:30 never shows,
            # so it fires as the clock jumps to 03:00 CEST (01:00 UTC), once.
            (
                "30 2 * * *",
                "Europe/Paris",
                _utc(2026, 3, 28, 12),
                [_utc(2026, 3, 29, 1), _utc(2026, 3, 30, 0, 30)],
            ),
            # Four skipped matches, and 03:00 matches too: still one tick.
            (
                "*/15 2,3 * * *",
                "Europe/Paris",
                _utc(2026, 3, 29, 0, 50),
                [_utc(2026, 3, 29, 1), _utc(2026, 3, 29, 1, 15)],
            ),
            # Paris falls back at 03:00 CEST on 2026-10-25: 02:30 shows twice, fires once.
            (
                "30 2 * * *",
                "Europe/Paris",
                _utc(2026, 10, 24, 12),
                [_utc(2026, 10, 25, 0, 30), _utc(2026, 10, 26, 1, 30)],
            ),
            # Weekdays at nine in New York: EST (UTC-5) on Friday, EDT (UTC-4)
            # from Sunday 2026-03-08 on.
            (
                "0 9 * * 1-5",
                "America/New_York",
                _utc(2026, 3, 6),
                [_utc(2026, 3, 6, 14), _utc(2026, 3, 9, 13), _utc(2026, 3, 10, 13)],
            ),
            # New York's repeated hour on 2026-11-01: every 20 minutes pauses in it.
            (
                "*/20 * * * *",
                "America/New_York",
                _utc(2026, 11, 1, 5, 30),
                [_utc(2026, 11, 1, 5, 40), _utc(2026, 11, 1, 7), _utc(2026, 11, 1, 7, 20)],
            ),
            # Lord Howe jumps 30 minutes, 02:00 to 02:30 (+10:30 to +11) on
            # 2026-10-04: 02:15 fires at the jump, 15:30 UTC.
            (
                "15 2 * * *",
                "Australia/Lord_Howe",
                _utc(2026, 10, 3, 12),
                [_utc(2026, 10, 3, 15, 30), _utc(2026, 10, 4, 15, 15)],
            ),
            # ... and falls back 02:00 to 01:30 on 2026-04-05: 01:45 fires the first time.
            (
                "45 1 * * *",
                "Australia/Lord_Howe",
                _utc(2026, 4, 4, 12),
                [_utc(2026, 4, 4, 14, 45), _utc(2026, 4, 5, 15, 15)],
            ),
            # No daylight saving time: always UTC+5:30.
            (
                "0 9 * * *",
                "Asia/Kolkata",
                _utc(2026, 6, 30, 12),
                [_utc(2026, 7, 1, 3, 30), _utc(2026, 7, 2, 3, 30)],
            ),
            ("0 9 * * *", "UTC", _utc(2026, 6, 30, 12), [_utc(2026, 7, 1, 9)]),
        ],
    )
    def test_written_out_fires(
        self, expression: str, tz: str, after: dt.datetime, fires: list[dt.datetime]
    ) -> None:
        cron = Cron(expression, tz=tz)
        found = []
        for _ in fires:
            after = cron.next_fire(after)
            found.append(after)
        assert found == fires
        assert all(fire.tzinfo is UTC for fire in found)

    def test_after_the_second_showing_the_next_day_comes(self) -> None:
        # 15:15 UTC is 01:45 shown the second time on Lord Howe: it fired at 14:45.
        cron = Cron("45 1 * * *", tz="Australia/Lord_Howe")
        assert cron.next_fire(_utc(2026, 4, 4, 15, 0)) == _utc(2026, 4, 5, 15, 15)

    def test_a_fire_past_the_calendar_is_a_schedule_error(self) -> None:
        # 9999-12-31 23:59 in New York is 10000-01-01 04:59 UTC: no datetime holds it.
        cron = Cron("59 23 31 12 *", tz="America/New_York")
        with pytest.raises(ScheduleError, match="does not fire after"):
            cron.next_fire(_utc(9999, 12, 30))
        assert cron.next_fire(_utc(9998, 12, 31)) == _utc(9999, 1, 1, 4, 59)

    def test_no_zone_is_utc(self) -> None:
        assert Cron("0 9 * * *").tz is None
        assert Cron("0 9 * * *").next_fire(_utc(2026, 7, 1)) == _utc(2026, 7, 1, 9)
        assert Cron("0 9 * * *") != Cron("0 9 * * *", tz="Europe/Paris")
        assert Cron("0 9 * * *", tz="Europe/Paris") == Cron("0 9 * * *", tz="Europe/Paris")

    @pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "europe/paris ", "", "../etc/passwd"])
    def test_an_unknown_zone_is_refused_by_name(self, tz: str) -> None:
        with pytest.raises(ScheduleError, match="time zone") as info:
            Cron("0 9 * * *", tz=tz)
        assert repr(tz) in str(info.value)

    def test_an_app_takes_a_zoned_cron(self) -> None:
        app = guild.Guild("tz")
        app.periodic(Cron("0 9 * * 1-5", tz="Europe/Paris"), "reports", name="morning")
        schedule = app.schedules["morning"].schedule
        assert isinstance(schedule, Cron)
        assert schedule.tz == "Europe/Paris"
