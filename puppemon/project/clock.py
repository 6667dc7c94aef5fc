"""When clock triggers fire, as APScheduler 3 triggers: cron lines (their times come from cron.py)
and anchored intervals.

APScheduler's own `CronTrigger.from_crontab` is not standard cron: it counts weekdays from
Monday (`0 0 * * 0` fires on Mondays) and ANDs day-of-month with day-of-week where cron ORs
them. So cron lines are parsed and their fire times found in cron.py (pure Python, which is
what `validate` uses too); this module only hands those times to the daemon's scheduler.
"""
from __future__ import annotations

import functools
from datetime import datetime, timedelta, timezone as dt_timezone
from zoneinfo import ZoneInfo

from apscheduler.triggers.base import BaseTrigger

from puppemon.formats import format_interval
from puppemon.project.cron import CronTimes, cron_times, strictly_after

UTC = dt_timezone.utc


class StandardCronTrigger(BaseTrigger):
    """An APScheduler 3 trigger that fires like Vixie cron in an IANA timezone."""

    def __init__(self, times: CronTimes) -> None:
        self.times, self.spec, self.timezone = times, times.spec, times.timezone
        self.jitter = None

    def __repr__(self) -> str:
        return f"<StandardCronTrigger {self.spec.expr!r} ({self.timezone.key})>"

    def __str__(self) -> str:
        return f"cron[{self.spec.expr}, {self.timezone.key}]"

    def get_next_fire_time(self, previous_fire_time, now):
        # after the previous fire time even if that is in the past: the scheduler handles misfires
        start = now if previous_fire_time is None else strictly_after(previous_fire_time)
        return self.times.at_or_after(start)

    def at_or_after(self, start: datetime) -> datetime | None:
        """The first fire time at or after `start`, in the trigger's timezone."""
        return self.times.at_or_after(start)


@functools.lru_cache(maxsize=1024)
def cron_trigger(expr: str, timezone: str) -> StandardCronTrigger:
    """An APScheduler trigger with standard cron semantics; CronError for an invalid line."""
    return StandardCronTrigger(cron_times(expr, timezone))


class AnchoredIntervalTrigger(BaseTrigger):
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
