"""Each flow's last fire, as the runs branch tells it: what a daemon with no state of its own (`--once` in a
scheduled CI job, a fresh server) counts missed fires from.

The last fire of a flow is the newest scheduled time that is either recorded (a run.json's `scheduled`:
clock fires, catch-ups, backfills, `resume --catch-up`) or claimed (a file `claims/.../<flow>/<key>.json`,
whose key is the fire's UTC time: daemon/claims.py, `puppemon backfill`). Claims are read from their names
alone; records from the newest runs of the flow, going back only as far as a newer fire could be (a run
starts at or after its fire). The tip is read first, the archive refs only when the tip knows nothing.
"""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from puppemon.formats import is_flow_name, parse_iso
from puppemon.gitstore import Store
from puppemon.history.records import RunStore

UTC = timezone.utc
FIRE_KEY = re.compile(r"([0-9]{8}T[0-9]{6})(?:\.([0-9]{3}))?Z\.json\Z")
DATE_PART = {4: r"[0-9]{4}", 2: r"[0-9]{2}"}
LOOK = 50   # run records read per flow, at first (more only when none of them names a fire)


def last_fires(store: Store, ref: str, flows) -> dict[str, datetime]:
    """{flow: its newest fire recorded or claimed on the runs branch `ref`}; a flow with none is left out."""
    runs = RunStore(store, ref)
    tips = [t for t in (runs.tip, *runs.archives) if t]
    found = {}
    for flow in flows:
        if not is_flow_name(flow):
            continue
        times = [t for t in (_claimed(store, tips, flow), _recorded(runs, flow)) if t is not None]
        if times:
            found[flow] = max(times)
    return found


def _names(store: Store, tip: str, path: str, width: int) -> list[str]:
    return sorted((e.name for e in store.listdir(tip, path) if e.is_tree and re.fullmatch(DATE_PART[width], e.name)),
                  reverse=True)


def _days(store: Store, tip: str, top: str):
    """The `yyyy/mm/dd` day directories under `top` (claims, deploys), newest first."""
    for year in _names(store, tip, top, 4):
        for month in _names(store, tip, f"{top}/{year}", 2):
            for day in _names(store, tip, f"{top}/{year}/{month}", 2):
                yield f"{year}/{month}/{day}"


def _claimed(store: Store, tips: list[str], flow: str) -> datetime | None:
    """The newest fire claimed for `flow`: in the newest day directory of claims/ that has the flow."""
    for tip in tips:
        for day in _days(store, tip, "claims"):
            keys = [m for e in store.listdir(tip, f"claims/{day}/{flow}") if (m := FIRE_KEY.match(e.name))]
            if keys:
                return max(_key_time(m) for m in keys)
    return None


def _key_time(match: re.Match) -> datetime:
    moment = datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return moment + timedelta(milliseconds=int(match.group(2) or 0))


def _recorded(runs: RunStore, flow: str) -> datetime | None:
    """The newest `scheduled` of the flow's run records: the newest LOOK runs, then more while none has one."""
    limit = LOOK
    while True:
        records = runs.list(flow, limit=limit)
        times = [t for r in records if (t := _scheduled(r)) is not None]
        if times or len(records) < limit:
            break
        limit *= 4
    # runs start at or after their fire: a newer fire than those read would be in a newer run, read too
    return max(times) if times else None


def _scheduled(record: dict) -> datetime | None:
    try:
        moment = parse_iso(record.get("scheduled"))
    except (TypeError, ValueError):
        return None
    return moment.astimezone(UTC) if moment is not None and moment.tzinfo is not None else None


SCAN = 10_000   # fire times read from one window, at most


def newest_fires(flow, since: datetime, now: datetime, count: int) -> tuple[list[datetime], bool]:
    """The newest `count` fire times of `flow` in (since, now], earliest first, and whether there were more.

    Read from a window that grows back from `now` (a minute, doubled) until it holds more than `count`
    or reaches `since`, so a flow missed for a year costs what a flow missed for an hour does."""
    from puppemon.project.triggers import fire_times

    span = timedelta(minutes=1)
    while True:
        start = max(since, now - span)
        found = fire_times(flow, start, now, SCAN)
        if len(found) > count or start == since:
            return found[-count:], len(found) > count
        span *= 2


def was_deployed(store: Store, ref: str, sha: str, daemon: str, since: datetime) -> bool:
    """Whether the runs branch records that `daemon` deployed `sha` (a deploy record `<sha>-<daemon>.json` of
    a day from `since` on): a daemon with a new state directory then resumes the deploy instead of taking it
    anew (no second deploy record, no second run on deploy)."""
    runs = RunStore(store, ref)
    name, first = f"{sha}-{daemon}.json", f"{since.astimezone(UTC):%Y/%m/%d}"
    for tip in (t for t in (runs.tip, *runs.archives) if t):
        for day in _days(store, tip, "deploys"):
            if day < first:
                break
            if store.lookup(tip, f"deploys/{day}/{name}") is not None:
                return True
    return False
