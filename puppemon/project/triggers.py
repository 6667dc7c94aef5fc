"""Trigger kinds: the ways a flow starts, one class per kind, listed in one registry (KINDS).

A kind knows its manifest form (a key of the flow and the checker for its value),
how to describe itself, when it fires next, which fire times a stopped daemon
missed (catch-up), and, for clock kinds, the APScheduler triggers that fire it.
Where a kind needs the running daemon to hear its events (a deploy landing, and
later a file arriving or another flow finishing), puppemon/daemon/sources.py
serves it under the same registry key, so nothing here imports upward.

Runs a person asks for (`puppemon trigger`, the HTTP hook, `puppemon run`) need
no manifest key: every flow accepts them, and a flow with no trigger is "manual".

Adding a kind: one class satisfying `Trigger`, one line in KINDS (its manifest
key joins the flow schema by itself), and a source in daemon/sources.py if the
daemon has to listen for it.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from zoneinfo import ZoneInfo

from puppemon.formats import format_interval
from puppemon.project.chains import After
from puppemon.project.events import NoClock
from puppemon.project.filewatch import OnFile
from puppemon.project.schema import Invalid, boolean, duration, list_of, string

if TYPE_CHECKING:
    from puppemon.project.manifest import Flow

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)   # where interval grids start (DESIGN.md)


class Trigger(Protocol):
    """One way a flow is started, as the manifest declares it."""

    kind: ClassVar[str]                    # registry key, and the daemon source serving it
    key: ClassVar[str]                     # the flow's manifest key that declares it

    @staticmethod
    def check(node: Any, path: str) -> Any:
        """The checked manifest value (schema.Invalid when it is wrong)."""

    @classmethod
    def build(cls, value: Any, timezone: str) -> Trigger | None:
        """The trigger for a checked value (None when the value switches it off)."""

    def describe(self) -> str:
        """For people: `cron 0 8 * * * (UTC)`, `every 6h`, `on deploy`."""

    def next_fire(self, after: datetime) -> datetime | None:
        """The first fire time strictly after `after`; None when no clock decides it."""

    def fire_times(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        """Fire times in (start, end], earliest first, at most `limit` (for catch-up)."""

    def clock(self, start: datetime) -> list:
        """APScheduler triggers that fire this one (empty for event kinds), from `start` on."""

    def preview(self, now: datetime) -> datetime | str:
        """When it next fires, or what it waits for (`next deploy`)."""


def _cron_line(node, path: str) -> str:
    from puppemon.project.cron import CronError, parse_cron

    text = string(node, path)
    try:
        return parse_cron(text).expr
    except CronError as exc:
        raise Invalid(node, path, str(exc)) from None


@dataclass(frozen=True)
class Cron:
    """`schedule: "0 8 * * 1-5"` (or a list): standard cron in the flow's timezone."""

    kind: ClassVar[str] = "cron"
    key: ClassVar[str] = "schedule"
    check = staticmethod(list_of(_cron_line, nonempty=True))
    exprs: tuple[str, ...]
    timezone: str = "UTC"

    @classmethod
    def build(cls, value: tuple[str, ...], timezone: str) -> Cron:
        return cls(tuple(value), timezone)

    def _times(self):
        from puppemon.project.cron import cron_times

        return [cron_times(expr, self.timezone) for expr in self.exprs]

    def describe(self) -> str:
        return f"cron {', '.join(self.exprs)} ({self.timezone})"

    def next_fire(self, after: datetime) -> datetime | None:
        from puppemon.project.cron import strictly_after

        times = [t for t in (c.at_or_after(strictly_after(after)) for c in self._times()) if t is not None]
        return min(times) if times else None

    def fire_times(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        from puppemon.project.cron import strictly_after

        found: list[datetime] = []
        for trigger in self._times():
            t = start
            for _ in range(limit):
                t = trigger.at_or_after(strictly_after(t))
                if t is None or t > end:
                    break
                found.append(t)
        return found

    def clock(self, start: datetime) -> list:
        # APScheduler triggers: the daemon's scheduler, and only it, needs them (and APScheduler)
        from puppemon.project.clock import cron_trigger

        return [cron_trigger(expr, self.timezone) for expr in self.exprs]

    def preview(self, now: datetime) -> datetime | str:
        return self.next_fire(now) or "never"


@dataclass(frozen=True)
class Interval:
    """`every: 6h`: fire on a fixed grid anchored to the Unix epoch (every: 1h fires on the hour, every: 1s on
    whole seconds), so every daemon computes the same fire times, whenever it started."""

    kind: ClassVar[str] = "interval"
    key: ClassVar[str] = "every"
    check = staticmethod(duration(minimum=1.0))
    seconds: float
    timezone: str = "UTC"

    @classmethod
    def build(cls, value: float, timezone: str) -> Interval:
        return cls(value, timezone)

    def describe(self) -> str:
        return f"every {format_interval(self.seconds)}"

    def next_fire(self, after: datetime) -> datetime | None:
        step = timedelta(seconds=self.seconds)
        return EPOCH + step * ((after.astimezone(UTC) - EPOCH) // step + 1)

    def fire_times(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        found: list[datetime] = []
        moment = self.next_fire(start)
        step = timedelta(seconds=self.seconds)
        while len(found) < limit and moment <= end:
            found.append(moment)
            moment += step
        return found

    def clock(self, start: datetime) -> list:
        from puppemon.project.clock import AnchoredIntervalTrigger

        return [AnchoredIntervalTrigger(self.seconds, EPOCH, self.timezone)]

    def preview(self, now: datetime) -> datetime | str:
        return self.next_fire(now)


@dataclass(frozen=True)
class OnDeploy(NoClock):
    """`run_on_deploy: true`: run whenever a new flows commit is deployed."""

    kind: ClassVar[str] = "deploy"
    key: ClassVar[str] = "run_on_deploy"
    check = staticmethod(boolean)

    @classmethod
    def build(cls, value: bool, timezone: str) -> OnDeploy | None:
        return cls() if value else None

    def describe(self) -> str:
        return "on deploy"

    def preview(self, now: datetime) -> datetime | str:
        return "next deploy"


# The registry: kind -> class. Order is the order `describe` lists them in.
KINDS: dict[str, type] = {cls.kind: cls for cls in (Cron, Interval, OnDeploy, OnFile)}
KINDS[After.kind] = After   # `after:` another flow's runs (project/chains.py)


def build(values: dict[str, Any], timezone: str) -> tuple[Trigger, ...]:
    """The triggers a flow's checked manifest values declare (their keys are taken out of `values`)."""
    found = []
    for cls in KINDS.values():
        if cls.key in values:
            trigger = cls.build(values.pop(cls.key), timezone)
            if trigger is not None:
                found.append(trigger)
    return tuple(found)


# --- a flow's triggers together ----------------------------------------------------------

def describe(flow: Flow) -> str:
    """How the flow is triggered: "cron 0 8 * * 1-5 (Asia/Taipei)", "every 6h", "on deploy", "manual"."""
    return ", ".join(t.describe() for t in flow.triggers) or "manual"


def next_fire(flow: Flow, after: datetime) -> datetime | None:
    """The flow's next fire time strictly after `after`, in its timezone."""
    times = [t for t in (trigger.next_fire(after) for trigger in flow.triggers) if t is not None]
    return min(times).astimezone(ZoneInfo(flow.timezone)) if times else None


def fire_times(flow: Flow, start: datetime, end: datetime, limit: int) -> list[datetime]:
    """Fire times in (start, end], earliest first, at most `limit`."""
    found = {t.astimezone(UTC) for trigger in flow.triggers for t in trigger.fire_times(start, end, limit)}
    zone = ZoneInfo(flow.timezone)
    return [t.astimezone(zone) for t in sorted(found)[:limit]]


def flow_trigger(flow: Flow, start: datetime | None = None):
    """One APScheduler trigger for all the flow's clock triggers (OR-ed), or None when it has none.

    A moment two of them share fires once. An interval fires at epoch + k * every."""
    clocks = [c for trigger in flow.triggers for c in trigger.clock(start or datetime.now(UTC))]
    if len(clocks) <= 1:
        return clocks[0] if clocks else None
    from apscheduler.triggers.combining import OrTrigger

    return OrTrigger(clocks)


def next_run(flow: Flow, now: datetime) -> str:
    """When the flow runs next, for people: a local time with its zone, or what it waits for."""
    previews = [trigger.preview(now) for trigger in flow.triggers]
    times = [p for p in previews if isinstance(p, datetime)]
    if times:
        return min(times).astimezone(ZoneInfo(flow.timezone)).strftime("%Y-%m-%d %H:%M %Z")
    return next((p for p in previews if isinstance(p, str)), "on trigger")
