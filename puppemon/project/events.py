"""What the trigger kinds that events start (a deploy, a file, another flow's run) share: no clock."""
from __future__ import annotations

from datetime import datetime


class NoClock:
    """A kind no clock decides: no next fire time, nothing to catch up by time, no APScheduler trigger."""

    def next_fire(self, after: datetime) -> datetime | None:
        return None

    def fire_times(self, start: datetime, end: datetime, limit: int) -> list[datetime]:
        return []

    def clock(self, start: datetime) -> list:
        return []
