"""Cron triggers checked against croniter as the oracle, across timezones and DST changes."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import HealthCheck, given, settings, strategies as st

from puppemon.project.manifest import Flow, parse
from puppemon.project.clock import cron_trigger
from puppemon.project.cron import CronError, parse_cron
from puppemon.project.triggers import describe, fire_times, flow_trigger, next_fire

UTC = timezone.utc

EXPRESSIONS = [
    "* * * * *", "*/5 * * * *", "*/7 * * * *", "*/45 * * * *", "0 * * * *", "30 * * * *",
    "15,45 * * * *", "0 */2 * * *", "0 */3 * * *", "0 */5 * * *", "23 0-20/2 * * *", "0 0-6/3 * * *",
    "30 2 * * *", "0 2 * * *", "15 2 * * *", "45 2 * * *", "0,30 2 * * *", "59 1 * * *", "30 1 * * *",
    "0 1 * * *", "0 3 * * *", "0 1,2,3 * * *", "0-10 2 * * *", "* 2 * * *", "*/20 1-3 * * *",
    "0 0 * * *", "0 12 * * *", "5 4 * * sun", "0 22 * * 1-5", "0 8 * * 1-5", "0 8 * * mon-fri",
    "0 9 * * MON,WED,FRI", "0 0 * * 0", "0 0 * * 7", "0 0 * * 6,7", "0 0 * * 5-7", "30 5 * * 2/2",
    "*/15 9-17 * * 1-5", "0 0 1 * *", "0 0 15 * *", "0 0 31 * *", "0 0 30 * *", "0 0 29 2 *",
    "0 0 28-31 * *", "0 0 1 1 *", "0 0 1 jan,jul *", "0 6 * mar-may *", "0 0 * dec *", "0 0 */10 * *",
    "0 0 5/10 * *", "0 4 8-14 * *", "0 0,12 1 */2 *", "0 0 1-7 * 1", "0 0 13 * 5", "0 0 1,15 * 3",
    "0 0 */2 * 1", "0 0 1 * */2", "1 2 3 4 5", "59 23 31 12 *", "@hourly", "@daily", "@midnight",
    "@weekly", "@monthly", "@yearly", "@annually",
]
# written out here rather than taken from puppemon.project.cron, so the oracle stays independent
SHORTCUTS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
             "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
             "@annually": "0 0 1 1 *"}


def _local(zone: str, *args, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=ZoneInfo(zone), fold=fold)


STARTS = {
    "UTC": [_local("UTC", 2026, 12, 31, 23, 47, 13), _local("UTC", 2028, 2, 28, 22, 0, 5)],
    "Asia/Taipei": [_local("Asia/Taipei", 2026, 6, 15, 10, 7)],
    "Asia/Kolkata": [_local("Asia/Kolkata", 2026, 12, 31, 23, 47, 13)],
    "America/New_York": [  # gap 2026-03-08 02:00 -> 03:00; 01:00-02:00 twice on 2026-11-01
        _local("America/New_York", 2026, 3, 8, 0, 47, 13), _local("America/New_York", 2026, 3, 7, 22, 7),
        _local("America/New_York", 2026, 11, 1, 0, 13, 7), _local("America/New_York", 2026, 11, 1, 1, 20, fold=1),
    ],
    "Europe/London": [  # gap 2026-03-29 01:00 -> 02:00; 01:00-02:00 twice on 2026-10-25
        _local("Europe/London", 2026, 3, 29, 0, 31, 7), _local("Europe/London", 2026, 10, 24, 23, 7),
        _local("Europe/London", 2026, 10, 25, 1, 10, fold=1),
    ],
    "Australia/Lord_Howe": [  # half-hour DST: gap 02:00 -> 02:30 on 2026-10-04; 01:30-02:00 twice on 2026-04-05
        _local("Australia/Lord_Howe", 2026, 10, 4, 1, 7), _local("Australia/Lord_Howe", 2026, 4, 5, 1, 7),
        _local("Australia/Lord_Howe", 2026, 4, 5, 1, 40, fold=1),
    ],
}


def _gap_end(tz: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The instant in (low, high] where the UTC offset changes (one change assumed)."""
    while high - low > timedelta(seconds=1):
        middle = low + timedelta(seconds=(high - low).total_seconds() // 2)
        if middle.astimezone(tz).utcoffset() == low.astimezone(tz).utcoffset():
            low = middle
        else:
            high = middle
    return high


def oracle(expr: str, zone: str, start: datetime, count: int) -> list[datetime]:
    """croniter's fire times, adjusted where it differs from Vixie cron on purpose (see puppemon/project/clock.py).

    1. Day-of-month OR day-of-week: Vixie ORs them only when neither field starts with '*';
       croniter also ORs `*/2`. croniter's day_or=False gives the AND that Vixie uses then.
    2. A fixed-time job runs once on a fall-back night, at the first of the repeated wall times;
       croniter runs it at both, so the second (fold=1) occurrence is dropped.
    3. A job with '*' in its minute or hour field skips wall times that a spring-forward gap removes;
       croniter moves some of them (not all) to the end of the gap: keep only times whose wall
       clock matches the expression. A fixed-time job whose wall time falls in a gap runs at the end
       of the gap: croniter does so too, except when a later time in the same hour also matches
       (`1 0-23 * * *` skips 02:01 and runs at 03:01): add the end of such a gap.
    4. A job with '*' in its minute or hour field runs at both occurrences of a repeated wall time.
       croniter does so when clocks go back a whole hour, but not for Lord Howe's half hour, where
       it skips the second 01:30-02:00: add the second occurrence of every repeated time it gives.
    """
    fields = SHORTCUTS.get(expr, expr).split()
    day_or = not (fields[2].startswith("*") or fields[4].startswith("*"))
    fixed = not (fields[0].startswith("*") or fields[1].startswith("*"))
    tz = ZoneInfo(zone)
    it = croniter(" ".join(fields), start, day_or=day_or)
    found: set[datetime] = set()
    previous = start.astimezone(UTC)
    while True:
        t = it.get_next(datetime).astimezone(UTC)
        if fixed and previous.astimezone(tz).utcoffset() < t.astimezone(tz).utcoffset():
            gap_end = _gap_end(tz, previous, t)                     # rule 3
            wall = gap_end.astimezone(tz).replace(tzinfo=None)
            skipped = gap_end.astimezone(tz).utcoffset() - (gap_end - timedelta(seconds=1)).astimezone(tz).utcoffset()
            if any(croniter.match(" ".join(fields), wall - timedelta(minutes=m), day_or=day_or)
                   for m in range(1, int(skipped.total_seconds() // 60) + 1)):
                found.add(gap_end)
        previous = t
        wall = t.astimezone(tz).replace(tzinfo=None)
        first, second = (wall.replace(tzinfo=tz, fold=f).astimezone(UTC) for f in (0, 1))
        if fixed:
            if t == first:                                          # rule 2
                found.add(t)
        elif croniter.match(" ".join(fields), wall, day_or=day_or):  # rule 3
            found.add(t)
            if t == first and second != first and wall == second.astimezone(tz).replace(tzinfo=None):
                found.add(second)                                   # rule 4
        # croniter's times increase, and an added second occurrence lies after its first:
        # everything up to `t` is final
        if sum(1 for x in found if x <= t) >= count:
            return [x.astimezone(tz) for x in sorted(found)[:count]]


def ours(expr: str, zone: str, start: datetime, count: int) -> list[datetime]:
    """Drive the trigger the way APScheduler's scheduler does."""
    trigger = cron_trigger(expr, zone)
    times, previous = [], None
    now = start.astimezone(UTC) + timedelta(microseconds=1)   # croniter counts strictly after start
    for _ in range(count):
        previous = trigger.get_next_fire_time(previous, now)
        times.append(previous)
        now = previous
    return times


def _show(times: list[datetime], zone: str) -> list[str]:
    tz = ZoneInfo(zone)
    return [t.astimezone(UTC).astimezone(tz).isoformat() for t in times]


@pytest.mark.parametrize("zone", sorted(STARTS))
@pytest.mark.parametrize("expr", EXPRESSIONS)
def test_cron_matches_croniter(expr, zone):
    for start in STARTS[zone]:
        got = ours(expr, zone, start, 50)
        assert _show(got, zone) == _show(oracle(expr, zone, start, 50), zone), (expr, zone, start)
        # returned times are normalised local times in the flow's zone (fold included)
        assert [t.isoformat() for t in got] == _show(got, zone)


_DAYS = ("sun", "Mon", "TUE", "wed", "thu", "fri", "sat")


def _field(low: int, high: int, names: tuple[str, ...] = ()):
    value = st.integers(low, high)
    if names:
        value = value | st.sampled_from(names)
    number = st.integers(low, high)
    # a < b: croniter 7 reads a one-value range such as `1-1` as `*`
    rng = st.tuples(number, number).filter(lambda ab: ab[0] != ab[1]).map(sorted).map(lambda ab: f"{ab[0]}-{ab[1]}")
    step = st.integers(1, high - low + 1)
    item = st.one_of(
        value.map(str), rng,
        st.tuples(rng, step).map(lambda rs: f"{rs[0]}/{rs[1]}"),
        # `7/2` is Sunday for cronie and puppemon, every day for croniter: leave it out
        st.tuples(st.integers(low, min(high, 6) if names == _DAYS else high), step).map(lambda ns: f"{ns[0]}/{ns[1]}"),
    )
    # '*' and '*/n' only alone: inside a list (`0,*`, `1,*/2`) cron implementations disagree on
    # whether the field still counts as '*' for the day-of-month/day-of-week rule
    return st.just("*") | step.map(lambda s: f"*/{s}") | st.lists(item, min_size=1, max_size=3).map(",".join)


CRON = st.tuples(
    _field(0, 59), _field(0, 23),
    _field(1, 28),                       # days every month has: keeps matches frequent for croniter
    _field(1, 12, ("jan", "Feb", "MAR", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")),
    _field(0, 7, _DAYS),
).map(" ".join)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(expr=CRON, zone=st.sampled_from(sorted(STARTS)), index=st.integers(0, 5),
       shift=st.integers(0, 6 * 24 * 60))
def test_random_cron_matches_croniter(expr, zone, index, shift):
    starts = STARTS[zone]
    start = (starts[index % len(starts)].astimezone(UTC) - timedelta(minutes=shift)).astimezone(ZoneInfo(zone))
    assert _show(ours(expr, zone, start, 20), zone) == _show(oracle(expr, zone, start, 20), zone)


def test_sunday_is_zero_and_seven_not_monday():
    # APScheduler's from_crontab would fire `0 0 * * 0` on Mondays
    monday = datetime(2026, 3, 2, tzinfo=UTC)
    assert ours("0 0 * * 0", "UTC", monday, 2) == [datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC)]
    assert ours("0 0 * * 7", "UTC", monday, 1) == [datetime(2026, 3, 8, tzinfo=UTC)]
    assert ours("0 0 * * fri-sun", "UTC", monday, 3) == [datetime(2026, 3, d, tzinfo=UTC) for d in (6, 7, 8)]


def test_day_of_month_or_day_of_week():
    start = datetime(2026, 3, 1, 0, 30, tzinfo=UTC)
    # both restricted: the 13th OR any Friday
    assert [t.day for t in ours("0 0 13 * 5", "UTC", start, 4)] == [6, 13, 20, 27]
    # a day-of-month starting with '*' makes it AND (Vixie): odd days that are Mondays
    assert [t.day for t in ours("0 0 */2 * 1", "UTC", start, 2)] == [9, 23]


def test_dst_rules_in_new_york():
    zone = "America/New_York"
    spring = _local(zone, 2026, 3, 7, 12)
    assert _show(ours("30 2 * * *", zone, spring, 2), zone) == [
        "2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"]          # once, at the end of the gap
    assert _show(ours("0 */2 * * *", zone, _local(zone, 2026, 3, 8, 0, 30), 2), zone) == [
        "2026-03-08T04:00:00-04:00", "2026-03-08T06:00:00-04:00"]          # wildcard: 02:00 does not exist
    fall = _local(zone, 2026, 10, 31, 12)
    assert _show(ours("30 1 * * *", zone, fall, 2), zone) == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]          # not twice on the long night
    assert _show(ours("30 * * * *", zone, _local(zone, 2026, 11, 1, 0, 40), 3), zone) == [
        "2026-11-01T01:30:00-04:00", "2026-11-01T01:30:00-05:00", "2026-11-01T02:30:00-05:00"]


@pytest.mark.parametrize("expr, message", [
    ("0 8 * *", "'0 8 * *' has 4 fields (cron needs 5: minute hour day-of-month month day-of-week)"),
    ("", "'' has 0 fields (cron needs 5: minute hour day-of-month month day-of-week)"),
    ("0 25 * * *", "hour 25 is out of range in '0 25 * * *' (use 0-23)"),
    ("60 * * * *", "minute 60 is out of range in '60 * * * *' (use 0-59)"),
    ("0 0 0 * *", "day-of-month 0 is out of range in '0 0 0 * *' (use 1-31)"),
    ("0 0 * 13 *", "month 13 is out of range in '0 0 * 13 *' (use 1-12 or jan-dec)"),
    ("0 0 * * 8", "day-of-week 8 is out of range in '0 0 * * 8' (use 0-7 or sun-sat)"),
    ("0 0 * * funday", "day-of-week 'funday' is not valid in '0 0 * * funday' (use 0-7 or sun-sat)"),
    ("0 0 * * monday", "day-of-week 'monday' is not valid in '0 0 * * monday' (use 0-7 or sun-sat)"),
    ("0 0 mon * *", "day-of-month 'mon' is not valid in '0 0 mon * *' (use 1-31)"),
    ("*/0 * * * *", "minute step '0' is not valid in '*/0 * * * *' (use a whole number from 1)"),
    ("0 0 * * 5-1", "day-of-week range 5-1 is reversed in '0 0 * * 5-1' (write the smaller value first)"),
    ("1,,2 * * * *", "minute '' is not valid in '1,,2 * * * *' (use 0-59)"),
    ("0 0 ? * *", "day-of-month '?' is not valid in '0 0 ? * *' (use 1-31)"),
    ("0 0 30 2 *", "'0 0 30 2 *' never fires (none of its months has day 30)"),
    ("0 0 31 4,6 *", "'0 0 31 4,6 *' never fires (none of its months has day 31)"),
    ("@reboot", "'@reboot' is not supported (use run_on_deploy: true to run on every deploy)"),
    ("@fortnightly", "'@fortnightly' is not a cron shortcut (use @yearly, @annually, @monthly, @weekly, "
                     "@daily, @midnight, @hourly or 5 fields)"),
    ("0 0 * * * *", "'0 0 * * * *' has 6 fields (cron needs 5: minute hour day-of-month month day-of-week)"),
])
def test_invalid_cron(expr, message):
    with pytest.raises(CronError) as info:
        parse_cron(expr)
    assert str(info.value) == message


def test_cron_normalises_whitespace_and_shortcut_case():
    assert parse_cron("  0   8 *\t* 1-5 ").expr == "0 8 * * 1-5"
    assert parse_cron("@Daily").expr == "@daily"
    assert parse_cron("0 30 * * *".replace("30", "3")).fixed
    assert not parse_cron("@hourly").fixed


def _flow(yaml_flow: str, tz: str = "UTC") -> Flow:
    text = f"version: 1\ndefaults:\n  timezone: {tz}\nflows:\n  f:\n    command: x\n{yaml_flow}"
    return parse(text).flows["f"]


def test_describe():
    assert describe(_flow("    schedule: '0 8 * * 1-5'\n", "Asia/Taipei")) == "cron 0 8 * * 1-5 (Asia/Taipei)"
    assert describe(_flow("    schedule: ['0 8 * * *', '@hourly']\n")) == "cron 0 8 * * *, @hourly (UTC)"
    assert describe(_flow("    every: 6h\n")) == "every 6h"
    assert describe(_flow("    every: 5400\n")) == "every 1h30m"
    assert describe(_flow("    every: 1.5\n")) == "every 1.5s"
    assert describe(_flow("    every: 1d\n    run_on_deploy: true\n")) == "every 1d, on deploy"
    assert describe(_flow("    run_on_deploy: true\n")) == "on deploy"
    assert describe(_flow("")) == "manual"


def test_next_fire_is_strictly_after_and_in_the_flows_zone():
    flow = _flow("    schedule: '0 8 * * 1-5'\n", "Asia/Taipei")
    after = datetime(2026, 11, 26, 0, 0, tzinfo=UTC)                        # 08:00 in Taipei, a Thursday
    assert next_fire(flow, after).isoformat() == "2026-11-27T08:00:00+08:00"
    assert next_fire(flow, after - timedelta(seconds=1)).isoformat() == "2026-11-26T08:00:00+08:00"
    assert next_fire(_flow(""), after) is None
    assert next_fire(_flow("    run_on_deploy: true\n"), after) is None
    both = _flow("    schedule: '0 8 * * 1-5'\n    every: 10m\n", "Asia/Taipei")  # both allowed: whichever is first
    assert next_fire(both, after).isoformat() == "2026-11-26T08:10:00+08:00"


def test_fire_times_for_catch_up():
    flow = _flow("    schedule: '0 */6 * * *'\n")
    start, end = datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 2, 0, 0, tzinfo=UTC)
    assert [t.hour for t in fire_times(flow, start, end, 10)] == [6, 12, 18, 0]   # (start, end]
    assert [t.hour for t in fire_times(flow, start, end, 2)] == [6, 12]
    every = _flow("    every: 5h\n    schedule: '0 12 * * *'\n")
    # an interval's grid is anchored to the Unix epoch, not to `start`: 5h steps land on 04:00, 09:00, ...
    assert [t.strftime("%H:%M") for t in fire_times(every, start.replace(minute=30), end, 10)] == [
        "04:00", "09:00", "12:00", "14:00", "19:00", "00:00"]


def test_flow_trigger():
    assert flow_trigger(_flow("")) is None
    anchor = datetime(2026, 1, 1, tzinfo=UTC)
    interval = flow_trigger(_flow("    every: 90s\n"), start=anchor)
    assert interval.get_next_fire_time(None, anchor + timedelta(seconds=100)) == anchor + timedelta(seconds=180)
    crons = flow_trigger(_flow("    schedule: ['0 8 * * *', '0 20 * * *']\n    every: 5h\n"), start=anchor)
    first = crons.get_next_fire_time(None, anchor)
    times = [first]
    for _ in range(4):
        times.append(crons.get_next_fire_time(times[-1], times[-1] + timedelta(microseconds=1)))
    assert [t.astimezone(UTC).strftime("%H:%M") for t in times] == ["04:00", "08:00", "09:00", "14:00", "19:00"]


def test_intervals_are_anchored_to_the_epoch_whenever_a_daemon_starts():
    hourly, every_second = _flow("    every: 1h\n", "Asia/Kolkata"), _flow("    every: 1s\n")
    after = datetime(2026, 11, 25, 8, 17, 42, 500000, tzinfo=UTC)
    assert next_fire(hourly, after).astimezone(UTC) == datetime(2026, 11, 25, 9, 0, tzinfo=UTC)   # on the hour
    assert next_fire(every_second, after) == datetime(2026, 11, 25, 8, 17, 43, tzinfo=UTC)       # whole seconds
    assert next_fire(every_second, datetime(2026, 11, 25, 8, 17, 43, tzinfo=UTC)).second == 44  # strictly after
    # two daemons that start at different moments compute the same fire times
    starts = [after, after + timedelta(minutes=13, seconds=7.25)]
    grids = [flow_trigger(hourly, start=s).get_next_fire_time(None, after + timedelta(hours=1)) for s in starts]
    assert grids[0] == grids[1] and grids[0].astimezone(UTC) == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert [t.minute for t in fire_times(_flow("    every: 20m\n"), after, after + timedelta(hours=1), 9)] == [
        20, 40, 0]
