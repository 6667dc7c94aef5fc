"""When clock triggers fire: cron lines in an IANA timezone and anchored intervals, as APScheduler 3 triggers.

APScheduler's own `CronTrigger.from_crontab` is not standard cron: it counts weekdays from
Monday (`0 0 * * 0` fires on Mondays) and ANDs day-of-month with day-of-week where cron ORs
them. So cron lines are parsed in cron.py, and APScheduler is only asked for explicit value lists.

Daylight saving time follows Vixie cron (`man 8 cron`): a job at a fixed time (neither the
minute nor the hour field starts with `*`) whose wall-clock time is skipped when clocks go
forward runs once, at the end of the gap (02:30 -> 03:00 in New York); when clocks go back it
runs only at the first of the two 01:30s. Jobs with `*` in the minute or hour field follow the
clock: times in a gap do not exist, and times in the repeated hour happen twice.
"""
from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

from puppemon.formats import format_interval
from puppemon.project.cron import WEEKDAYS, CronSpec, parse_cron

UTC = dt_timezone.utc
_SECOND = timedelta(seconds=1)
_HORIZON = timedelta(days=7)    # no zone changes its UTC offset twice within a week


def _csv(values) -> str:
    """Values as APScheduler expressions, runs folded into ranges (each list item costs it a loop)."""
    runs: list[list[int]] = []
    for value in sorted(values):
        if runs and runs[-1][1] == value - 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def _wall_trigger(spec: CronSpec):
    """An APScheduler trigger over naive wall-clock times (run in UTC, so it never sees DST)."""
    from apscheduler.triggers.combining import OrTrigger
    from apscheduler.triggers.cron import CronTrigger

    common = dict(second="0", minute=_csv(spec.minutes), hour=_csv(spec.hours),
                  month=_csv(spec.months), timezone=UTC)
    weekdays = ",".join(WEEKDAYS[d] for d in sorted(spec.weekdays))   # names: APScheduler's 0 is Monday
    if spec.day_star or spec.weekday_star:
        return CronTrigger(day=_csv(spec.days), day_of_week=weekdays, **common)
    # both restricted: cron fires when either matches
    return OrTrigger([CronTrigger(day=_csv(spec.days), day_of_week="*", **common),
                      CronTrigger(day="*", day_of_week=weekdays, **common)])


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


def strictly_after(after: datetime) -> datetime:
    # in UTC: adding to an aware local time is wall-clock arithmetic and loses `fold`
    return after.astimezone(UTC) + timedelta(microseconds=1)


try:
    from apscheduler.triggers.base import BaseTrigger as _BaseTrigger
except ImportError:  # pragma: no cover - APScheduler is a dependency
    _BaseTrigger = object


class StandardCronTrigger(_BaseTrigger):
    """An APScheduler 3 trigger that fires like Vixie cron in an IANA timezone."""

    def __init__(self, spec: CronSpec, timezone: str) -> None:
        self.spec, self.timezone = spec, ZoneInfo(timezone)
        self.jitter = None
        self._wall = _wall_trigger(spec)

    def __repr__(self) -> str:
        return f"<StandardCronTrigger {self.spec.expr!r} ({self.timezone.key})>"

    def __str__(self) -> str:
        return f"cron[{self.spec.expr}, {self.timezone.key}]"

    def get_next_fire_time(self, previous_fire_time, now):
        # after the previous fire time even if that is in the past: the scheduler handles misfires
        start = now if previous_fire_time is None else strictly_after(previous_fire_time)
        return self.at_or_after(start)

    def _wall_next(self, wall: datetime) -> datetime | None:
        found = self._wall.get_next_fire_time(None, wall.replace(tzinfo=UTC))
        return found.replace(tzinfo=None) if found else None

    def _gap_fires(self, instant: datetime) -> bool:
        """True when clocks jump forward at `instant` over a wall time this (fixed-time) job names."""
        before, after = _offset(self.timezone, instant - _SECOND), _offset(self.timezone, instant)
        if after <= before:
            return False
        wall = self._wall_next((instant + before).replace(tzinfo=None))
        return wall is not None and wall < (instant + after).replace(tzinfo=None)

    def at_or_after(self, start: datetime) -> datetime | None:
        """The first fire time at or after `start`, in the trigger's timezone."""
        zone = self.timezone
        t = start.astimezone(UTC)
        if t.microsecond:
            t = t.replace(microsecond=0) + _SECOND
        if self.spec.fixed and self._gap_fires(t):
            return t.astimezone(zone)
        # Walk segments of constant UTC offset; inside one, wall time and UTC move together.
        while True:
            offset, end = _offset(zone, t), _segment_end(zone, t)
            wall = self._wall_next((t + offset).replace(tzinfo=None))
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
def cron_trigger(expr: str, timezone: str) -> StandardCronTrigger:
    """An APScheduler trigger with standard cron semantics; CronError for an invalid line."""
    return StandardCronTrigger(parse_cron(expr), timezone)


class AnchoredIntervalTrigger(_BaseTrigger):
    """Fires at anchor + k * interval. Unlike APScheduler's IntervalTrigger, it stays on that grid
    inside an OrTrigger (which hands every child the combined previous fire time)."""

    def __init__(self, seconds: float, anchor: datetime, timezone: str) -> None:
        self.interval = timedelta(seconds=seconds)
        self.anchor = anchor.astimezone(UTC)
        self.timezone = ZoneInfo(timezone)
        self.jitter = None

    def __repr__(self) -> str:
        return f"<AnchoredIntervalTrigger every {format_interval(self.interval.total_seconds())} from {self.anchor}>"

    def get_next_fire_time(self, previous_fire_time, now):
        if previous_fire_time is None:
            start, strict = now.astimezone(UTC), False
        else:
            start, strict = previous_fire_time.astimezone(UTC), True
        if start < self.anchor:
            return self.anchor.astimezone(self.timezone)
        steps = (start - self.anchor) // self.interval
        fire = self.anchor + self.interval * steps
        if fire < start or (strict and fire == start):
            fire += self.interval
        return fire.astimezone(self.timezone)
