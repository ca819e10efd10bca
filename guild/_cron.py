"""Sans-IO schedules: when does a periodic job fire next?

Two kinds, both pure (``next_fire(after) -> datetime``, time passed in, UTC):

* ``Cron("*/5 9-17 * * mon-fri")`` — the five classic fields (minute, hour, day
  of month, month, day of week), each ``*``, a number, a range ``a-b``, a list
  ``a,b``, and steps ``*/n`` or ``a-b/n``; names for months and weekdays. As in
  Vixie cron, when both day fields are restricted a day matching *either* fires.
  An expression that names no date at all (``0 0 30 2 *``) is refused when built;
  a rare one (``0 0 29 2 *``, eight years apart across 2100) is searched for.
  Evaluated in UTC, or in the wall time of an IANA zone (``tz="Europe/Paris"``).
* ``Every(seconds)`` — ticks aligned to the epoch (``t % seconds == 0``), so every
  process computes the same ticks without talking to the others.

Wall time in a zone with daylight saving time is not one-to-one with instants,
and the rules here follow what a cron user expects from the wall clock:

* a wall time the clock skips (02:30 in Paris on the last Sunday of March) fires
  once, at the instant the clock jumps to (03:00 local). Every skipped match of
  that day fires there together, as one tick; so does a match at the jump itself.
  Vixie cron does the same for fixed-time jobs (it leaves out ``*`` hours and
  minutes, which here are caught up too: one tick, never more).
* a wall time the clock shows twice (01:30 in New York on the first Sunday of
  November) fires once, the first time. ``*/15 * * * *`` in such a zone therefore
  pauses through the repeated hour; a schedule that must tick through it should
  be UTC (no ``tz``) or an ``Every``.

Firing once across many processes is not this module's job: each tick has a
stable identity (``tick_key``), and the scheduler enqueues with it as the
idempotency key, so the broker stores the first and ignores the rest.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING

import attrs

from ._exports import publish

if TYPE_CHECKING:
    import zoneinfo

_MONTHS = {
    m: i
    for i, m in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"], 1
    )
}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
# (name, lowest, highest, names)
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _WEEKDAYS),
)
# The longest each month can be (February 29 in leap years): a day-of-month that
# is above this in every month of the expression names no date at all.
_LONGEST_MONTH = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}
# The Gregorian calendar repeats every 400 years: a schedule that has not fired
# within one whole cycle never will. The constructor proves that every accepted
# expression fires (the longest gap is February 29th's eight years, 2096 to
# 2104), so the search only ever ends here on a bug.
_SEARCH_LIMIT_YEARS = 400


class ScheduleError(ValueError):
    """A cron expression or interval that cannot be a schedule."""


def _is_number(text: str) -> bool:
    # str.isdigit() is true of "²" and "٣" too; a cron number is ASCII digits only.
    return text.isascii() and text.isdigit()


def _value(text: str, low: int, high: int, names: dict[str, int], field: str) -> int:
    value = int(text) if _is_number(text) else names.get(text.lower())
    if value is None or not low <= value <= high:
        raise ScheduleError(f"{field}: {text!r} is not in {low}-{high}")
    return value


def _parse_field(
    text: str, low: int, high: int, names: dict[str, int], field: str
) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not _is_number(step_text) or int(step_text) < 1:
                raise ScheduleError(f"{field}: step {step_text!r} must be a positive integer")
            step = int(step_text)
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start = _value(first, low, high, names, field)
            stop = _value(last, low, high, names, field)
            if start > stop:
                raise ScheduleError(f"{field}: range {body!r} runs backwards")
        else:
            start = _value(body, low, high, names, field)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return frozenset(values)


def _zone(name: str) -> zoneinfo.ZoneInfo:
    # Here, not at the top: only a schedule with a time zone needs it, and every
    # `import guild` would pay for finding the time zone database.
    import zoneinfo

    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    if not zoneinfo.available_timezones():
        raise ScheduleError(
            f"time zone {name!r}: this system has no time zone database"
            " (install the tzdata package)"
        )
    raise ScheduleError(f"time zone {name!r} is unknown (IANA names look like 'Europe/Paris')")


def _instant(wall: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The instant a naive local ``wall`` time fires at in ``zone`` (see the module notes)."""
    first = wall.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)
    second = wall.replace(tzinfo=zone, fold=1).astimezone(dt.UTC)
    if first <= second:
        # One instant, or two for a wall time shown twice: the first of them.
        return first
    # Skipped (PEP 495: fold=0 reads a gap with the offset before it, fold=1 with
    # the one after, so ``first`` lands after the jump and ``second`` before it).
    # The jump is the earliest whole second in (second, first] on the new offset.
    after_offset = wall.replace(tzinfo=zone, fold=1).utcoffset()
    low, high = 0, int((first - second).total_seconds())
    while high - low > 1:
        middle = (low + high) // 2
        if (second + dt.timedelta(seconds=middle)).astimezone(zone).utcoffset() == after_offset:
            high = middle
        else:
            low = middle
    return second + dt.timedelta(seconds=high)


@attrs.frozen
class Cron:
    """A five-field cron schedule, evaluated in UTC or in the wall time of ``tz``.

    Args:
        expression: the five fields, as in Vixie cron.
        tz: an IANA zone name (``"Europe/Paris"``); ``None``: UTC. A wall time
            the clock skips fires once as it jumps, one it shows twice fires the
            first time (see :mod:`guild._cron`). The ``zone`` attribute holds
            its ``zoneinfo.ZoneInfo``.

    Raises:
        ScheduleError: the expression is not a schedule, or ``tz`` is no zone.
    """

    expression: str
    tz: str | None = attrs.field(default=None, kw_only=True)
    zone: zoneinfo.ZoneInfo | None = attrs.field(init=False, repr=False, eq=False)
    minutes: frozenset[int] = attrs.field(init=False)
    hours: frozenset[int] = attrs.field(init=False)
    days: frozenset[int] = attrs.field(init=False)
    months: frozenset[int] = attrs.field(init=False)
    weekdays: frozenset[int] = attrs.field(init=False)
    any_day: bool = attrs.field(init=False)
    any_weekday: bool = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        parts = self.expression.split()
        if len(parts) != 5:
            raise ScheduleError(
                f"cron {self.expression!r}: expected 5 fields (minute hour day month weekday)"
            )
        parsed = [
            _parse_field(p, lo, hi, names, f)
            for p, (f, lo, hi, names) in zip(parts, _FIELDS, strict=True)
        ]
        weekdays = frozenset(d % 7 for d in parsed[4])  # 7 is Sunday too
        for name, value in zip(
            ("minutes", "hours", "days", "months", "weekdays"), (*parsed[:4], weekdays), strict=True
        ):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "zone", None if self.tz is None else _zone(self.tz))
        object.__setattr__(self, "any_day", parts[2] == "*")
        object.__setattr__(self, "any_weekday", parts[4] == "*")
        # Only a restricted day of month combined with any weekday can name no
        # date: every month has every weekday, and with both day fields
        # restricted a matching weekday alone fires.
        if self.any_weekday and not self.any_day:
            longest = max(_LONGEST_MONTH[m] for m in self.months)
            if min(self.days) > longest:
                raise ScheduleError(
                    f"cron {self.expression!r} never fires: its months have at most"
                    f" {longest} days, and it asks for day {min(self.days)}"
                )

    def _day_matches(self, day: dt.date) -> bool:
        in_month = day.day in self.days
        in_week = (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_fire(self, after: dt.datetime) -> dt.datetime:
        """The first firing time strictly after ``after`` (an aware datetime), in UTC."""
        if self.zone is None:
            wall = after.astimezone(dt.UTC).replace(tzinfo=None)
            return self._next_wall(wall, after).replace(tzinfo=dt.UTC)
        try:
            wall = after.astimezone(self.zone).replace(tzinfo=None, fold=0)
            while True:
                wall = self._next_wall(wall, after)
                fire = _instant(wall, self.zone)
                # After the second showing of a repeated wall time, the matches
                # left in it fired the first time round: walk on past them.
                if fire > after:
                    return fire
        except OverflowError:
            # A wall time within a day of 9999-12-31 whose instant a datetime cannot hold.
            raise ScheduleError(
                f"cron {self.expression!r} does not fire after {after.isoformat()}"
            ) from None

    def _next_wall(self, wall: dt.datetime, after: dt.datetime) -> dt.datetime:
        """The first naive wall time on the schedule, a whole minute, after ``wall``."""
        t = wall.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit_year = t.year + _SEARCH_LIMIT_YEARS
        while t.year <= limit_year:
            try:
                if t.month not in self.months:
                    t = (t.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                    continue
                if not self._day_matches(t.date()):
                    t = t.replace(hour=0, minute=0) + dt.timedelta(days=1)
                    continue
                if t.hour not in self.hours:
                    t = t.replace(minute=0) + dt.timedelta(hours=1)
                    continue
                if t.minute not in self.minutes:
                    t += dt.timedelta(minutes=1)
                    continue
            except OverflowError:
                break  # past 9999-12-31, the last instant a datetime can hold
            return t
        raise ScheduleError(f"cron {self.expression!r} does not fire after {after.isoformat()}")


@attrs.frozen
class Every:
    """Fire every ``seconds``, on ticks aligned to the epoch."""

    seconds: float = attrs.field()

    @seconds.validator
    def _check(self, _: object, value: float) -> None:
        if not (value > 0 and math.isfinite(value)):
            raise ScheduleError(f"every: seconds must be a positive number, got {value!r}")

    def next_fire(self, after: dt.datetime) -> dt.datetime:
        """The first aligned tick strictly after ``after``."""
        ts = after.timestamp()
        n = math.floor(ts / self.seconds) + 1
        fire = dt.datetime.fromtimestamp(n * self.seconds, dt.UTC)
        # Float division and microsecond rounding can land a tick on ``after`` itself.
        while fire <= after:
            n += 1
            fire = dt.datetime.fromtimestamp(n * self.seconds, dt.UTC)
        return fire


Schedule = Cron | Every


def tick_key(name: str, fire_at: dt.datetime) -> str:
    """The idempotency key of one tick of schedule ``name``: the same in every process."""
    return f"periodic:{name}:{fire_at.astimezone(dt.UTC).isoformat()}"


# Reprs, tracebacks and pickles name guild.X (see guild._exports).
publish(globals())
