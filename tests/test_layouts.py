"""Exact layouts of `runs`, `status` and `validate` at 60, 80 and 120 columns on a terminal, and off one
(where every column is whole whatever $COLUMNS says: scripts read it)."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from puppemon.formats import utc_iso
from puppemon.project.manifest import load
from puppemon.project.triggers import next_fire
from puppemon.ui import Column, fit, plain_table, table_lines
from tests.conftest import git, puppemon, puppemon_on_terminal
from tests.test_runs_logs import HISTORY, make_record, seed
from tests.test_status import write_status

LONG_TRIGGER = make_record("hello", 5, trigger={"kind": "request", "by": "ann.lee@workstation-12.example.org"},
                           suffix="ee0004")


def on_terminal(*args, cwd, columns: int, tz: str = "UTC") -> str:
    """What a terminal `columns` wide shows, colours taken out."""
    out = puppemon_on_terminal(*args, cwd=cwd, env={"COLUMNS": str(columns), "TZ": tz})
    return re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r\n", "\n")


def widest(text: str) -> int:
    return max(len(line) for line in text.splitlines())


@pytest.fixture
def history(project, bare_remote, tmp_path):
    seed(bare_remote, tmp_path, HISTORY + [(LONG_TRIGGER, b"")])
    puppemon("runs", cwd=project)
    return project


RUNS_60 = """\
id                        flow     status      duration
───────────────────────────────────────────────────────
20261125T083500Z-ee0004   hello    succeeded   0.4s
20261125T083400Z-dd0003   hello    skipped     0.4s
20261125T083300Z-cc0002   report   timed_out   1h 01m
20261125T083200Z-aa0001   hello    cancelled   0.4s
20261125T083100Z-0b0b0b   backup   failed      1m 15s
20261125T083000Z-7f3a9c   hello    succeeded   0.4s
"""
RUNS_80 = """\
id                        flow     status      started                duration
──────────────────────────────────────────────────────────────────────────────
20261125T083500Z-ee0004   hello    succeeded   2026-11-25 16:35 CST   0.4s
20261125T083400Z-dd0003   hello    skipped     2026-11-25 16:34 CST   0.4s
20261125T083300Z-cc0002   report   timed_out   2026-11-25 16:33 CST   1h 01m
20261125T083200Z-aa0001   hello    cancelled   2026-11-25 16:32 CST   0.4s
20261125T083100Z-0b0b0b   backup   failed      2026-11-25 16:31 CST   1m 15s
20261125T083000Z-7f3a9c   hello    succeeded   2026-11-25 16:30 CST   0.4s
"""
RUNS_120 = """\
id                        flow     status      trigger                              started                duration
───────────────────────────────────────────────────────────────────────────────────────────────────────────────────
20261125T083500Z-ee0004   hello    succeeded   request by                           2026-11-25 16:35 CST   0.4s
                                               ann.lee@workstation-12.example.org
20261125T083400Z-dd0003   hello    skipped     schedule                             2026-11-25 16:34 CST   0.4s
20261125T083300Z-cc0002   report   timed_out   deploy                               2026-11-25 16:33 CST   1h 01m
20261125T083200Z-aa0001   hello    cancelled   manual by ann@laptop                 2026-11-25 16:32 CST   0.4s
20261125T083100Z-0b0b0b   backup   failed      schedule                             2026-11-25 16:31 CST   1m 15s
20261125T083000Z-7f3a9c   hello    succeeded   schedule                             2026-11-25 16:30 CST   0.4s
"""
RUNS_PLAIN = """\
id                        flow     status      trigger                                         started                duration
──────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────────
20261125T083500Z-ee0004   hello    succeeded   request by ann.lee@workstation-12.example.org   2026-11-25 16:35 CST   0.4s
20261125T083400Z-dd0003   hello    skipped     schedule                                        2026-11-25 16:34 CST   0.4s
20261125T083300Z-cc0002   report   timed_out   deploy                                          2026-11-25 16:33 CST   1h 01m
20261125T083200Z-aa0001   hello    cancelled   manual by ann@laptop                            2026-11-25 16:32 CST   0.4s
20261125T083100Z-0b0b0b   backup   failed      schedule                                        2026-11-25 16:31 CST   1m 15s
20261125T083000Z-7f3a9c   hello    succeeded   schedule                                        2026-11-25 16:30 CST   0.4s
"""


@pytest.mark.parametrize("columns, expected", [(60, RUNS_60), (80, RUNS_80), (120, RUNS_120)])
def test_runs_on_a_terminal(history, columns, expected):
    out = on_terminal("runs", "--no-fetch", cwd=history, columns=columns, tz="Asia/Taipei")
    assert out == expected
    assert widest(out) <= columns


def test_runs_off_a_terminal_is_whole_at_any_width(history):
    for columns in ("60", "80", "120"):
        proc = puppemon("runs", "--no-fetch", cwd=history, env={"COLUMNS": columns, "TZ": "Asia/Taipei"})
        assert proc.stdout == RUNS_PLAIN


VALIDATE_MANIFEST = """\
version: 1
flows:
  yearly-archive:
    command: make archive
    schedule: ["0 2 1 1 *", "30 14 1 1 *"]
    timezone: America/New_York
    run_on_deploy: true
  backup:
    command: ./backup.sh
    every: 6h
  adhoc:
    command: make x
"""


def validate_expected(next_run: str, backup: str) -> dict:
    return {60: """\
puppemon.yaml is valid: 3 flows
flow             trigger
──────────────────────────────────────────────
yearly-archive   cron 0 2 1 1 *, 30 14 1 1 *
                 (America/New_York), on deploy
backup           every 6h
adhoc            manual
""", 80: f"""\
puppemon.yaml is valid: 3 flows
flow             trigger                         next run
─────────────────────────────────────────────────────────────────────
yearly-archive   cron 0 2 1 1 *, 30 14 1 1 *     {next_run}
                 (America/New_York), on deploy
backup           every 6h                        {backup}
adhoc            manual                          on trigger
""", 120: f"""\
puppemon.yaml is valid: 3 flows
flow             trigger                                                     next run
─────────────────────────────────────────────────────────────────────────────────────────────────
yearly-archive   cron 0 2 1 1 *, 30 14 1 1 * (America/New_York), on deploy   {next_run}
backup           every 6h                                                    {backup}
adhoc            manual                                                      on trigger
"""}


def test_validate_on_a_terminal_and_off_one(tmp_path):
    (tmp_path / "puppemon.yaml").write_text(VALIDATE_MANIFEST)
    flows, now = load(tmp_path).flows, datetime.now(timezone.utc)
    moment = next_fire(flows["yearly-archive"], now)
    expected = validate_expected(moment.strftime("%Y-%m-%d %H:%M %Z"),   # the next 1 January, 02:00 EST
                                 next_fire(flows["backup"], now).strftime("%Y-%m-%d %H:%M %Z"))   # 6h steps from 00:00 UTC
    for columns in (60, 80, 120):
        out = on_terminal("validate", cwd=tmp_path, columns=columns)
        assert out == expected[columns]
        assert widest(out) <= columns
        assert puppemon("validate", cwd=tmp_path, env={"COLUMNS": str(columns)}).stdout == expected[120]


def status_expected(tip: str) -> dict:
    head = f"""\
alpha: running, heartbeat 2 min ago
  on server, pid 4242, puppemon 0.1.0
  deployed {tip[:7]}: up to date
"""
    tail = f"""\

old-box: gone (was running), last heartbeat 3 h ago
  on old-box.example.org, pid 4242, puppemon 0.1.0
  deployed 0000000; the remote has {tip[:7]} now
  no runs in flight

1 daemon gone (no heartbeat for 5m or more)
remove with `puppemon status --prune-gone`
"""
    running = "  running: report 20261125T083930Z-abcdef since 2026-11-25 08:39:30 UTC\n"
    return {60: head + """\
  flow                           next
  hello                          2026-11-25 09:00:00 UTC
  nightly-backup-of-everything   2026-11-26 03:00:00 UTC
  report                         -
  running: report 20261125T083930Z-abcdef
    since 2026-11-25 08:39:30 UTC
""" + tail, 80: head + """\
  flow                           next                      last run
  hello                          2026-11-25 09:00:00 UTC   succeeded
  nightly-backup-of-everything   2026-11-26 03:00:00 UTC   -
  report                         -                         timed_out
""" + running + tail, 120: head + """\
  flow                           next                      last run
  hello                          2026-11-25 09:00:00 UTC   succeeded   20261125T083500Z-ee0004
  nightly-backup-of-everything   2026-11-26 03:00:00 UTC   -
  report                         -                         timed_out   20261125T083300Z-cc0002
""" + running + tail}


def test_status_on_a_terminal_and_off_one(history, bare_remote):
    puppemon("push", cwd=history)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    now = datetime.now(timezone.utc)
    # ages that read the same for the minute the test takes: "2 min ago" (stale, not gone), "3 h ago" (gone)
    write_status(bare_remote, "alpha", flows_commit=tip, heartbeat=utc_iso(now - timedelta(seconds=150)),
                 flows={"hello": {"next": "2026-11-25T09:00:00.000Z"}, "report": {"next": None},
                        "nightly-backup-of-everything": {"next": "2026-11-26T03:00:00.000Z"}},
                 in_flight=[{"run_id": "20261125T083930Z-abcdef", "flow": "report",
                             "started": "2026-11-25T08:39:30.000Z"}])
    write_status(bare_remote, "old-box", host="old-box.example.org", heartbeat=utc_iso(now - timedelta(hours=3)),
                 flows_commit="0" * 40)
    expected = status_expected(tip)
    puppemon("status", "--fetch", cwd=history)
    for columns in (60, 80, 120):
        out = on_terminal("status", "--no-fetch", cwd=history, columns=columns)
        assert out == expected[columns]
        assert widest(out) <= columns
        assert puppemon("status", "--no-fetch", cwd=history, env={"COLUMNS": str(columns)}).stdout == expected[120]


# --- the layout itself ----------------------------------------------------------

def test_fit_narrows_wrapping_columns_then_drops_by_priority_and_never_cuts():
    columns = (Column("id"), Column("note", drop=2, wrap=True, least=4), Column("size", drop=1))
    texts = [["20261125T083000Z-7f3a9c", "a b c d e f", "10 KiB"]]
    assert fit(columns, texts, None) == ([0, 1, 2], [23, 11, 6])
    assert fit(columns, texts, 46) == ([0, 1, 2], [23, 11, 6])
    assert fit(columns, texts, 45) == ([0, 1, 2], [23, 10, 6])         # the note wraps
    assert fit(columns, texts, 42) == ([0, 1, 2], [23, 7, 6])
    assert fit(columns, texts, 38) == ([0, 2], [23, 6])                 # too narrow even wrapped: dropped
    assert fit(columns, texts, 10) == ([0], [23])                       # the id stays whole, wider than asked
    assert plain_table(columns, [["x", "one two three", "1"]]) == [
        "id   note            size", "─" * 25, "x    one two three   1"]
    lines = table_lines(columns, [["x", "one two three", ("1", "red")]], limit=19)
    assert lines == [["id", "   ", "note", "      ", "size"], ["─" * 19],
                     ["x", "    ", "one two", "   ", ("1", "red")], ["", "     ", "three"]]
