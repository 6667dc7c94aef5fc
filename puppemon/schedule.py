"""Cron lines and intervals as APScheduler 3 triggers, with standard (Vixie) cron semantics.

APScheduler's own `CronTrigger.from_crontab` is not standard cron: it counts weekdays from
Monday (`0 0 * * 0` fires on Mondays) and ANDs day-of-month with day-of-week where cron ORs
them. So cron lines are parsed here, and APScheduler is only asked for explicit value lists.

Daylight saving time follows Vixie cron (`man 8 cron`): a job at a fixed time (neither the
minute nor the hour field starts with `*`) whose wall-clock time is skipped when clocks go
forward runs once, at the end of the gap (02:30 -> 03:00 in New York); when clocks go back it
runs only at the first of the two 01:30s. Jobs with `*` in the minute or hour field follow the
clock: times in a gap do not exist, and times in the repeated hour happen twice.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from puppemon.errors import PuppemonError

if TYPE_CHECKING:
    from puppemon.manifest import Flow

UTC = dt_timezone.utc
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
_SECOND = timedelta(seconds=1)
_HORIZON = timedelta(days=7)    # no zone changes its UTC offset twice within a week


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
        start = now if previous_fire_time is None else _strictly_after(previous_fire_time)
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


def flow_trigger(flow: Flow, start: datetime | None = None):
    """The flow's trigger: its crons and interval OR-ed together, or None (manual / on deploy only).

    An interval fires at start + k * every (start defaults to now)."""
    from apscheduler.triggers.combining import OrTrigger

    triggers = [cron_trigger(expr, flow.timezone) for expr in flow.schedules]
    if flow.every:
        triggers.append(AnchoredIntervalTrigger(flow.every, start or datetime.now(UTC), flow.timezone))
    if not triggers:
        return None
    return triggers[0] if len(triggers) == 1 else OrTrigger(triggers)


def _strictly_after(after: datetime) -> datetime:
    # in UTC: adding to an aware local time is wall-clock arithmetic and loses `fold`
    return after.astimezone(UTC) + timedelta(microseconds=1)


def next_fire(flow: Flow, after: datetime) -> datetime | None:
    """The flow's next fire time strictly after `after`, in its timezone; an interval counts from `after`."""
    zone = ZoneInfo(flow.timezone)
    times = [cron_trigger(expr, flow.timezone).at_or_after(_strictly_after(after)) for expr in flow.schedules]
    if flow.every:
        times.append(after.astimezone(UTC) + timedelta(seconds=flow.every))
    times = [t for t in times if t is not None]
    return min(times).astimezone(zone) if times else None


def fire_times(flow: Flow, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Fire times in (start, end], earliest first, at most `limit`; an interval is anchored at `start`."""
    zone = ZoneInfo(flow.timezone)
    found: set[datetime] = set()
    for expr in flow.schedules:
        trigger, t, count = cron_trigger(expr, flow.timezone), start, 0
        while count < limit:
            t = trigger.at_or_after(_strictly_after(t))
            if t is None or t > end:
                break
            found.add(t.astimezone(UTC))
            count += 1
    if flow.every:
        anchor, k = start.astimezone(UTC), 1
        while k <= limit and anchor + timedelta(seconds=flow.every * k) <= end:
            found.add(anchor + timedelta(seconds=flow.every * k))
            k += 1
    return [t.astimezone(zone) for t in sorted(found)[:limit]]


def format_interval(seconds: float) -> str:
    """A compact interval as written in a manifest: 6h, 1h30m, 90s -> 1m30s, 1.5s."""
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    fraction = seconds - whole
    text = "".join(f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m")) if n)
    if secs or fraction or not text:
        text += f"{secs + fraction:g}s"
    return text


def describe(flow: Flow) -> str:
    """How the flow is triggered: "cron 0 8 * * 1-5 (Asia/Taipei)", "every 6h", "on deploy", "manual"."""
    parts = []
    if flow.schedules:
        parts.append(f"cron {', '.join(flow.schedules)} ({flow.timezone})")
    if flow.every:
        parts.append(f"every {format_interval(flow.every)}")
    if flow.run_on_deploy:
        parts.append("on deploy")
    return ", ".join(parts) or "manual"
