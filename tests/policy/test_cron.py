"""Schedules as pure functions: next_fire agrees with a reference model written here.

The reference never reads the parsed fields back from a ``Cron``: each generated
expression comes with the minutes, hours, days, months and weekdays it stands
for, built from the cron rules themselves, and a brute-force walk over those
sets says when it fires next.
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import guild
from guild import Cron, Every, ScheduleError
from guild._cron import tick_key

UTC = dt.UTC
instants = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2100, 1, 1), timezones=st.just(UTC)
)
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
WEEKDAY_NAMES = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]  # cron counts Sunday as 0


class Field:
    """One generated field: its text and the values it stands for."""

    def __init__(self, text: str, values: set[int]) -> None:
        self.text = text
        self.values = values

    def __repr__(self) -> str:
        return f"Field({self.text!r})"


def _part(low: int, high: int, names: list[str] | None) -> st.SearchStrategy[Field]:
    def name(value: int) -> st.SearchStrategy[str]:
        choices = [str(value)]
        if names is not None and value - low < len(names):
            label = names[value - low]
            choices += [label, label.upper(), label.capitalize()]
        return st.sampled_from(choices)

    @st.composite
    def build(draw: st.DrawFn) -> Field:
        kind = draw(st.sampled_from(["star", "one", "range", "range-step", "star-step", "from"]))
        a, b = sorted(draw(st.tuples(st.integers(low, high), st.integers(low, high))))
        step = draw(st.integers(1, high - low + 1))
        if kind == "star":
            return Field("*", set(range(low, high + 1)))
        if kind == "one":
            return Field(draw(name(a)), {a})
        if kind == "range":
            return Field(f"{draw(name(a))}-{draw(name(b))}", set(range(a, b + 1)))
        if kind == "range-step":
            return Field(f"{a}-{b}/{step}", set(range(a, b + 1, step)))
        if kind == "star-step":
            return Field(f"*/{step}", set(range(low, high + 1, step)))
        return Field(f"{a}/{step}", set(range(a, high + 1, step)))  # a, a+step, … to the top

    return build()


def _field(low: int, high: int, names: list[str] | None = None) -> st.SearchStrategy[Field]:
    parts = st.lists(_part(low, high, names), min_size=1, max_size=3)
    return parts.map(
        lambda ps: (
            ps[0]
            if len(ps) == 1
            else Field(",".join(p.text for p in ps), set().union(*(p.values for p in ps)))
        )
    )


class Expr:
    """A generated expression and what it means, independent of the parser."""

    def __init__(self, fields: tuple[Field, Field, Field, Field, Field]) -> None:
        minute, hour, day, month, weekday = fields
        self.text = " ".join(f.text for f in fields)
        self.minutes, self.hours, self.days, self.months = (
            minute.values,
            hour.values,
            day.values,
            month.values,
        )
        self.weekdays = {0 if w == 7 else w for w in weekday.values}  # 7 is Sunday too
        # Vixie cron: with both day fields restricted, a day matching either fires.
        self.either_day = day.text != "*" and weekday.text != "*"

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"

    def day_matches(self, day: dt.date) -> bool:
        if day.month not in self.months:
            return False
        # date.weekday() counts Monday as 0; cron counts Sunday as 0 (and as 7).
        cron_weekday = (day.weekday() + 1) % 7
        in_month, in_week = day.day in self.days, cron_weekday in self.weekdays
        return (in_month or in_week) if self.either_day else (in_month and in_week)

    def fires_ever(self) -> bool:
        # 2000 is a leap year: every (month, day) pair that can exist is in it, and
        # every month of it holds every weekday.
        first = dt.date(2000, 1, 1)
        return any(self.day_matches(first + dt.timedelta(days=n)) for n in range(366))

    def next_fire(self, after: dt.datetime) -> dt.datetime:
        """Brute force: minute by minute through the rest of the day, then day by day."""
        t = after.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        day = t.date()
        if self.day_matches(day):
            day_end = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
            while t < day_end:
                if t.hour in self.hours and t.minute in self.minutes:
                    return t
                t += dt.timedelta(minutes=1)
        day += dt.timedelta(days=1)
        # February 29th, the rarest date, is at most eight years from the last one
        # (2096 to 2104): nine years of days always reach the next firing day.
        for _ in range(9 * 366):
            if self.day_matches(day):
                # Every hour and minute of a later day is still ahead.
                return dt.datetime(day.year, day.month, day.day, min(self.hours), tzinfo=UTC) + (
                    dt.timedelta(minutes=min(self.minutes))
                )
            day += dt.timedelta(days=1)
        raise AssertionError(f"the reference found no firing of {self.text!r}")


expressions = st.tuples(
    _field(0, 59),
    _field(0, 23),
    _field(1, 31) | st.just(Field("*", set(range(1, 32)))),
    _field(1, 12, MONTH_NAMES),
    _field(0, 7, WEEKDAY_NAMES) | st.just(Field("*", set(range(7)))),
).map(Expr)


class TestCron:
    """next_fire is the first matching minute strictly after the given instant."""

    @settings(max_examples=300)
    @given(expressions, instants)
    def test_next_fire_agrees_with_the_reference_walk(self, expr: Expr, after: dt.datetime) -> None:
        if not expr.fires_ever():
            with pytest.raises(ScheduleError, match="never fires"):
                Cron(expr.text)
            return
        assert Cron(expr.text).next_fire(after) == expr.next_fire(after)

    @settings(max_examples=100)
    @given(expressions, instants)
    def test_consecutive_fires_agree_with_the_reference_walk(
        self, expr: Expr, after: dt.datetime
    ) -> None:
        if not expr.fires_ever():
            return
        cron = Cron(expr.text)
        expected = expr.next_fire(after)
        for _ in range(3):
            fire = cron.next_fire(expected - dt.timedelta(seconds=1))
            assert fire == expected
            expected = expr.next_fire(fire)
            assert cron.next_fire(fire) == expected

    @pytest.mark.parametrize(
        ("expression", "after", "fires"),
        [
            # Fridays only, not every day: 2026-12-02 is a Wednesday.
            ("0 0 * * fri", (2026, 12, 2), [(2026, 12, 4), (2026, 12, 11), (2026, 12, 18)]),
            ("0 0 * * 5", (2026, 12, 5), [(2026, 12, 11)]),
            # Sunday is 0 and 7.
            ("0 0 * * 0", (2026, 12, 1), [(2026, 12, 6), (2026, 12, 13)]),
            ("0 0 * * 7", (2026, 12, 1), [(2026, 12, 6), (2026, 12, 13)]),
            ("0 0 * * sat,sun", (2026, 12, 1), [(2026, 12, 5), (2026, 12, 6), (2026, 12, 12)]),
            ("0 0 * * MON-wed", (2026, 12, 3), [(2026, 12, 7), (2026, 12, 8), (2026, 12, 9)]),
            # The 13th, or any Friday (Vixie cron): Friday the 6th comes first.
            ("0 0 13 * fri", (2026, 11, 1), [(2026, 11, 6), (2026, 11, 13), (2026, 11, 20)]),
            # The 13th in a month without a Friday restriction.
            ("0 0 13 * *", (2026, 11, 1), [(2026, 11, 13), (2026, 12, 13), (2027, 1, 13)]),
            ("0 0 1 jan,jul *", (2026, 2, 1), [(2026, 7, 1), (2027, 1, 1), (2027, 7, 1)]),
            ("0 0 1 Feb-APR *", (2026, 3, 2), [(2026, 4, 1), (2027, 2, 1), (2027, 3, 1)]),
            ("0 0 31 * *", (2026, 1, 31), [(2026, 3, 31), (2026, 5, 31), (2026, 7, 31)]),
            ("0 0 31 2,3 *", (2026, 1, 1), [(2026, 3, 31), (2027, 3, 31)]),
            # Day 30 of February never comes, but Mondays do.
            ("0 0 30 2 mon", (2026, 1, 1), [(2026, 2, 2), (2026, 2, 9), (2026, 2, 16)]),
            # The next February 29th after 2096 is in 2104: 2100 is not a leap year.
            ("0 0 29 2 *", (2096, 3, 1), [(2104, 2, 29), (2108, 2, 29)]),
            ("0 0 29 2 *", (2024, 2, 29), [(2028, 2, 29), (2032, 2, 29)]),
            ("0 0 29 2 *", (1896, 3, 1), [(1904, 2, 29)]),
        ],
    )
    def test_written_out_days(
        self,
        expression: str,
        after: tuple[int, int, int],
        fires: list[tuple[int, int, int]],
    ) -> None:
        cron = Cron(expression)
        t = dt.datetime(*after, tzinfo=UTC)
        for day in fires:
            t = cron.next_fire(t)
            assert t == dt.datetime(*day, tzinfo=UTC)

    @pytest.mark.parametrize(
        ("expression", "after", "fires"),
        [
            ("* * * * *", (12, 0, 30), [(12, 1), (12, 2)]),
            ("* * * * *", (12, 0, 0), [(12, 1), (12, 2)]),
            ("*/20 * * * *", (12, 0, 0), [(12, 20), (12, 40), (13, 0)]),
            ("5/15 * * * *", (12, 0, 0), [(12, 5), (12, 20), (12, 35), (12, 50), (13, 5)]),
            ("10-30/10 * * * *", (12, 10, 0), [(12, 20), (12, 30), (13, 10)]),
            ("0,30 9-10 * * *", (9, 30, 0), [(10, 0), (10, 30)]),
            ("59 23 * * *", (23, 59, 0), [(23, 59)]),  # tomorrow, see the date check
            ("0 */6 * * *", (5, 59, 59), [(6, 0), (12, 0), (18, 0)]),
            ("0 22/3 * * *", (0, 0, 0), [(22, 0)]),
            ("15 3,1 * * *", (0, 0, 0), [(1, 15), (3, 15)]),
        ],
    )
    def test_written_out_minutes(
        self, expression: str, after: tuple[int, int, int], fires: list[tuple[int, int]]
    ) -> None:
        cron = Cron(expression)
        t = dt.datetime(2026, 12, 2, *after, tzinfo=UTC)
        for hour, minute in fires:
            t = cron.next_fire(t)
            assert (t.hour, t.minute, t.second, t.microsecond) == (hour, minute, 0, 0)
        assert t.date() == (
            dt.date(2026, 12, 3) if expression == "59 23 * * *" else dt.date(2026, 12, 2)
        )

    @pytest.mark.parametrize(
        ("month", "longest"),
        [(1, 31), (2, 29), (3, 31), (4, 30), (5, 31), (6, 30),
         (7, 31), (8, 31), (9, 30), (10, 31), (11, 30), (12, 31)],
    )  # fmt: skip
    def test_the_last_day_of_each_month_fires_and_the_day_after_is_refused(
        self, month: int, longest: int
    ) -> None:
        # 2024 is a leap year: its February has the 29th.
        after = dt.datetime(2024, 1, 1, tzinfo=UTC) - dt.timedelta(minutes=1)
        first = Cron(f"0 0 1 {month} *").next_fire(after)
        assert first == dt.datetime(2024, month, 1, tzinfo=UTC)
        last = Cron(f"0 0 {longest} {month} *").next_fire(after)
        assert last == dt.datetime(2024, month, longest, tzinfo=UTC)
        if longest < 31:
            with pytest.raises(ScheduleError, match="never fires"):
                Cron(f"0 0 {longest + 1} {month} *")

    def test_an_aware_time_in_another_zone_is_taken_as_the_same_instant(self) -> None:
        plus_two = dt.timezone(dt.timedelta(hours=2))
        # 01:30 at +02:00 is 23:30 UTC the day before: the next "0 0" is one UTC midnight on.
        after = dt.datetime(2026, 12, 2, 1, 30, tzinfo=plus_two)
        assert Cron("0 0 * * *").next_fire(after) == dt.datetime(2026, 12, 2, tzinfo=UTC)

    def test_search_stops_at_the_end_of_the_calendar(self) -> None:
        with pytest.raises(ScheduleError, match="does not fire after 9997"):
            Cron("0 0 29 2 *").next_fire(dt.datetime(9997, 1, 1, tzinfo=UTC))
        assert Cron("0 0 1 1 *").next_fire(dt.datetime(9998, 6, 1, tzinfo=UTC)) == dt.datetime(
            9999, 1, 1, tzinfo=UTC
        )

    @pytest.mark.parametrize(
        ("expression", "message"),
        [
            ("* * * *", "expected 5 fields"),
            ("* * * * * *", "expected 5 fields"),
            ("60 * * * *", "minute: '60' is not in 0-59"),
            ("-1 * * * *", "minute: '' is not in 0-59"),
            ("* 24 * * *", "hour: '24' is not in 0-23"),
            ("* * 0 * *", "day of month: '0' is not in 1-31"),
            ("* * 32 * *", "day of month: '32' is not in 1-31"),
            ("* * * 0 *", "month: '0' is not in 1-12"),
            ("* * * 13 *", "month: '13' is not in 1-12"),
            ("* * * foo *", "month: 'foo' is not in 1-12"),
            ("* * * * 8", "day of week: '8' is not in 0-7"),
            ("* * * * funday", "day of week: 'funday' is not in 0-7"),
            ("jan * * * *", "minute: 'jan' is not in 0-59"),
            ("* * mon * *", "day of month: 'mon' is not in 1-31"),
            ("* * * mon *", "month: 'mon' is not in 1-12"),
            ("* * * * jan", "day of week: 'jan' is not in 0-7"),
            ("5-1 * * * *", "minute: range '5-1' runs backwards"),
            ("* * * dec-jan *", "month: range 'dec-jan' runs backwards"),
            ("*/0 * * * *", "minute: step '0' must be a positive integer"),
            ("\u00b2 * * * *", "minute: '\u00b2' is not in 0-59"),  # a superscript two
            ("\u0663 * * * *", "minute: '\u0663' is not in 0-59"),  # an Arabic-Indic three
            ("*/\u00b2 * * * *", "minute: step '\u00b2' must be a positive integer"),
            ("* */x * * *", "hour: step 'x' must be a positive integer"),
            ("* * */-1 * *", "day of month: step '-1' must be a positive integer"),
            ("0 0 30 2 *", "never fires"),
            ("0 0 31 feb *", "never fires"),
            ("0 0 31 4 *", "never fires"),
            ("0 0 31 apr,jun,sep,nov *", "never fires"),
            ("0 0 30,31 2 *", "never fires"),
        ],
    )
    def test_bad_expressions_are_refused_when_built_and_say_why(
        self, expression: str, message: str
    ) -> None:
        with pytest.raises(ScheduleError, match=message):
            Cron(expression)

    def test_an_app_refuses_a_never_firing_schedule_when_it_is_registered(self) -> None:
        app = guild.Guild("calendar")
        with pytest.raises(ScheduleError, match="never fires"):
            app.periodic("0 0 31 apr,jun,sep,nov *", "reports")
        assert app.schedules == {}
        app.periodic("0 0 29 2 *", "reports")  # rare, but it fires
        assert list(app.schedules) == ["reports"]

    def test_schedule_errors_are_value_errors(self) -> None:
        with pytest.raises(ValueError, match="expected 5 fields"):
            Cron("")


class TestEvery:
    """Interval ticks are aligned to the epoch, so every process agrees on them."""

    @given(st.floats(0.5, 100_000), instants)
    def test_next_tick_is_aligned_and_within_one_interval(
        self, seconds: float, after: dt.datetime
    ) -> None:
        fire = Every(seconds).next_fire(after)
        assert after < fire <= after + dt.timedelta(seconds=seconds) + dt.timedelta(microseconds=2)

    @pytest.mark.parametrize(
        ("seconds", "after", "fire"),
        [
            (60, (12, 0, 30), (12, 1, 0)),
            (60, (12, 1, 0), (12, 2, 0)),  # strictly after: a tick on `after` is not next
            (3600, (12, 0, 0), (13, 0, 0)),
            (3600, (12, 59, 59), (13, 0, 0)),
            (45, (0, 0, 0), (0, 0, 45)),  # 2026-12-02 00:00 UTC is a multiple of 45 s
            (7, (0, 0, 0), (0, 0, 6)),  # … but not of 7 s: 1796169600 = 7 * 256595657 + 1
        ],
    )
    def test_written_out_ticks(
        self, seconds: float, after: tuple[int, int, int], fire: tuple[int, int, int]
    ) -> None:
        start = dt.datetime(2026, 12, 2, *after, tzinfo=UTC)
        assert Every(seconds).next_fire(start) == dt.datetime(2026, 12, 2, *fire, tzinfo=UTC)

    def test_fractional_ticks(self) -> None:
        start = dt.datetime(2026, 12, 2, 0, 0, 0, 100_000, tzinfo=UTC)
        fire = Every(0.25).next_fire(start)
        assert fire == dt.datetime(2026, 12, 2, 0, 0, 0, 250_000, tzinfo=UTC)

    @pytest.mark.parametrize("seconds", [0, -1, -0.5, float("inf"), float("nan")])
    def test_rejects_non_positive_or_non_finite(self, seconds: float) -> None:
        with pytest.raises(ScheduleError, match="every: seconds must be a positive number"):
            Every(seconds)


class TestTickKey:
    """The idempotency key names the schedule and the tick in UTC, whatever the zone."""

    def test_written_out(self) -> None:
        at = dt.datetime(2026, 12, 2, 9, 5, tzinfo=UTC)
        assert tick_key("reports", at) == "periodic:reports:2026-12-02T09:05:00+00:00"

    def test_same_instant_same_key_in_any_zone(self) -> None:
        at = dt.datetime(2026, 12, 2, 11, 5, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        assert tick_key("reports", at) == "periodic:reports:2026-12-02T09:05:00+00:00"
