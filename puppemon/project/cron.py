"""Cron lines: a pure parser with standard (Vixie) semantics, checked against croniter in the tests.

`parse_cron` normalises a 5-field line (or a shortcut such as @daily) into the sets
of values each field allows, with cron's rules: day-of-week 0 and 7 are Sunday,
names are case-insensitive, `5/15` means 5-59/15, and a line that can never fire
(`0 0 31 2 *`) is refused. `next_wall` finds the next wall-clock time a line names, and
`CronTimes` walks that through a timezone's changes of UTC offset. All of it is pure
Python: `validate` computes next fire times without the scheduler, and clock.py hands
the same times to APScheduler in the daemon.

Daylight saving time follows Vixie cron (`man 8 cron`): a job at a fixed time (neither the
minute nor the hour field starts with `*`) whose wall-clock time is skipped when clocks go
forward runs once, at the end of the gap (02:30 -> 03:00 in New York); when clocks go back it
runs only at the first of the two 01:30s. Jobs with `*` in the minute or hour field follow the
clock: times in a gap do not exist, and times in the repeated hour happen twice.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from datetime import timezone as dt_timezone
from zoneinfo import ZoneInfo

from puppemon.errors import PuppemonError

ALIASES = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
           "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@hourly": "0 * * * *"}
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
WEEKDAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
# name, lowest, highest, names (first name = lowest value), what to write
FIELDS = (("minute", 0, 59, (), "0-59"), ("hour", 0, 23, (), "0-23"),
          ("day-of-month", 1, 31, (), "1-31"), ("month", 1, 12, MONTHS, "1-12 or jan-dec"),
          ("day-of-week", 0, 7, WEEKDAYS, "0-7 or sun-sat"))
_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class CronError(PuppemonError, ValueError):
    """A text that is not a valid 5-field cron line."""


@dataclass(frozen=True)
class CronSpec:
    expr: str                       # normalised: single spaces, shortcuts lower-case
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]        # 0 = Sunday ... 6 = Saturday
    day_star: bool                  # Vixie: the field *starts with* '*' (so `*/2` counts)
    weekday_star: bool
    fixed: bool                     # neither minute nor hour starts with '*': DST rules apply


def _value(token: str, expr: str, name: str, low: int, high: int, names, allowed: str) -> int:
    if token.isascii() and token.isdigit():
        number = int(token)
    elif token.lower() in names:
        number = low + names.index(token.lower())
    else:
        raise CronError(f"{name} {token!r} is not valid in {expr!r} (use {allowed})")
    if not low <= number <= high:
        raise CronError(f"{name} {number} is out of range in {expr!r} (use {allowed})")
    return number


def _field(text: str, expr: str, name: str, low: int, high: int, names, allowed: str) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        base, slash, step_text = item.partition("/")
        if base == "*":
            first, last = low, high
        elif "-" in base:
            first_text, _, last_text = base.partition("-")
            first = _value(first_text, expr, name, low, high, names, allowed)
            last = _value(last_text, expr, name, low, high, names, allowed)
            if name == "day-of-week" and last == 0 and first > 0:
                last = 7                                  # fri-sun
            if first > last:
                raise CronError(f"{name} range {base} is reversed in {expr!r} (write the smaller value first)")
        else:
            first = _value(base, expr, name, low, high, names, allowed)
            last = high if slash else first               # `5/15` means 5-59/15, as in cronie and croniter
            if slash and name == "day-of-week":
                last = max(first, 6)                      # `4/1` is thu-sat, as in croniter
        step = 1
        if slash:
            if not (step_text.isascii() and step_text.isdigit()) or int(step_text) == 0:
                raise CronError(f"{name} step {step_text!r} is not valid in {expr!r} (use a whole number from 1)")
            step = int(step_text)
        values.update(range(first, last + 1, step))
    if name == "day-of-week" and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values)


@functools.lru_cache(maxsize=1024)
def parse_cron(text: str) -> CronSpec:
    """Check a cron line (5 fields or a shortcut such as @daily); CronError says what is wrong."""
    expr = " ".join(text.split())
    if expr.startswith("@"):
        if expr.lower() == "@reboot":
            raise CronError("'@reboot' is not supported (use run_on_deploy: true to run on every deploy)")
        if expr.lower() not in ALIASES:
            raise CronError(f"{expr!r} is not a cron shortcut (use {', '.join(ALIASES)} or 5 fields)")
        return _replace_expr(parse_cron(ALIASES[expr.lower()]), expr.lower())
    parts = expr.split(" ")
    if len(parts) != 5 or not expr:
        raise CronError(f"{expr!r} has {len(parts) if expr else 0} fields "
                        "(cron needs 5: minute hour day-of-month month day-of-week)")
    sets = [_field(part, expr, *spec) for part, spec in zip(parts, FIELDS)]
    spec = CronSpec(expr, *sets, day_star=parts[2].startswith("*"), weekday_star=parts[4].startswith("*"),
                    fixed=not (parts[0].startswith("*") or parts[1].startswith("*")))
    if not parts[2].startswith("*") and parts[4].startswith("*"):
        if not any(day <= _DAYS_IN_MONTH[month - 1] for day in spec.days for month in spec.months):
            raise CronError(f"{expr!r} never fires (none of its months has day {min(spec.days)})")
    return spec


def _replace_expr(spec: CronSpec, expr: str) -> CronSpec:
    return CronSpec(expr, spec.minutes, spec.hours, spec.days, spec.months, spec.weekdays,
                    spec.day_star, spec.weekday_star, spec.fixed)


_CYCLE_YEARS = 400      # the Gregorian calendar repeats: a line with no time in 400 years has none


def day_matches(spec: CronSpec, day: date) -> bool:
    """Vixie cron: day-of-month AND day-of-week when either field starts with `*`, else OR."""
    in_days, in_weekdays = day.day in spec.days, day.isoweekday() % 7 in spec.weekdays
    return in_days and in_weekdays if spec.day_star or spec.weekday_star else in_days or in_weekdays


def _days_in_month(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return _DAYS_IN_MONTH[month - 1]


def _time_on(spec: CronSpec, hour: int, minute: int) -> tuple[int, int] | None:
    """The first (hour, minute) of the line at or after hour:minute within one day."""
    minutes = sorted(spec.minutes)
    for h in sorted(spec.hours):
        if h > hour:
            return h, minutes[0]
        if h == hour:
            i = bisect.bisect_left(minutes, minute)
            if i < len(minutes):
                return h, minutes[i]
    return None


def next_wall(spec: CronSpec, wall: datetime) -> datetime | None:
    """The first naive wall-clock time at or after `wall` that the line names (seconds 0), or None."""
    start = wall.replace(second=0, microsecond=0)
    if start < wall:
        start += timedelta(minutes=1)
    first_day = start.date()
    for year in range(start.year, start.year + _CYCLE_YEARS + 1):
        for month in sorted(m for m in spec.months if (year, m) >= (first_day.year, first_day.month)):
            low = first_day.day if (year, month) == (first_day.year, first_day.month) else 1
            for d in range(low, _days_in_month(year, month) + 1):
                day = date(year, month, d)
                if not day_matches(spec, day):
                    continue
                at = _time_on(spec, start.hour, start.minute) if day == first_day else _time_on(spec, 0, 0)
                if at is not None:
                    return datetime(year, month, d, *at)
    return None


UTC = dt_timezone.utc
_SECOND = timedelta(seconds=1)
_HORIZON = timedelta(days=7)    # no zone changes its UTC offset twice within a week


def strictly_after(after: datetime) -> datetime:
    # in UTC: adding to an aware local time is wall-clock arithmetic and loses `fold`
    return after.astimezone(UTC) + timedelta(microseconds=1)


def _offset(zone: ZoneInfo, instant: datetime) -> timedelta:
    return instant.astimezone(zone).utcoffset()


@functools.lru_cache(maxsize=256)
def _transitions(zone: ZoneInfo, year: int) -> tuple[datetime, ...]:
    """Instants in `year` (UTC) where the zone's UTC offset changes; found by weekly probes + bisection."""
    found = []
    low = datetime(year, 1, 1, tzinfo=UTC)
    stop = datetime(year + 1, 1, 1, tzinfo=UTC)
    while low < stop:
        high = min(low + _HORIZON, stop)
        offset = _offset(zone, low)
        if _offset(zone, high) != offset:
            a, b = low, high
            while b - a > _SECOND:
                middle = a + timedelta(seconds=(b - a).total_seconds() // 2)
                if _offset(zone, middle) == offset:
                    a = middle
                else:
                    b = middle
            found.append(b)
        low = high
    return tuple(found)


def _segment_end(zone: ZoneInfo, start: datetime) -> datetime:
    """The first instant after `start` where the UTC offset changes (or a later year boundary)."""
    for year in (start.year, start.year + 1):
        for instant in _transitions(zone, year):
            if instant > start:
                return instant
    return datetime(start.year + 2, 1, 1, tzinfo=UTC)


class CronTimes:
    """When a cron line fires in an IANA timezone, as Vixie cron would fire it."""

    def __init__(self, spec: CronSpec, timezone: str) -> None:
        self.spec, self.timezone = spec, ZoneInfo(timezone)

    def _gap_fires(self, instant: datetime) -> bool:
        """True when clocks jump forward at `instant` over a wall time this (fixed-time) job names."""
        before, after = _offset(self.timezone, instant - _SECOND), _offset(self.timezone, instant)
        if after <= before:
            return False
        wall = next_wall(self.spec, (instant + before).replace(tzinfo=None))
        return wall is not None and wall < (instant + after).replace(tzinfo=None)

    def at_or_after(self, start: datetime) -> datetime | None:
        """The first fire time at or after `start`, in the line's timezone."""
        zone = self.timezone
        t = start.astimezone(UTC)
        if t.microsecond:
            t = t.replace(microsecond=0) + _SECOND
        if self.spec.fixed and self._gap_fires(t):
            return t.astimezone(zone)
        # Walk segments of constant UTC offset; inside one, wall time and UTC move together.
        while True:
            offset, end = _offset(zone, t), _segment_end(zone, t)
            wall = next_wall(self.spec, (t + offset).replace(tzinfo=None))
            if wall is None:
                return None
            candidate = (wall - offset).replace(tzinfo=UTC)
            if candidate < end:
                if self.spec.fixed and wall.replace(tzinfo=zone, fold=0).astimezone(UTC) != candidate:
                    t = candidate + _SECOND       # second 01:30 of a fall-back night: already ran
                    continue
                return candidate.astimezone(zone)
            if self.spec.fixed and self._gap_fires(end):
                return end.astimezone(zone)
            t = end


@functools.lru_cache(maxsize=1024)
def cron_times(expr: str, timezone: str) -> CronTimes:
    """The fire times of a cron line in `timezone`; CronError for an invalid line."""
    return CronTimes(parse_cron(expr), timezone)
