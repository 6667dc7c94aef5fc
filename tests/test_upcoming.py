"""`puppemon upcoming`: the next fire times of what is deployed, at 60, 80 and 120 columns, and as JSON."""
from __future__ import annotations

import json
import re
import time
from datetime import datetime, timezone

import pytest

from puppemon.commands import upcoming
from tests.conftest import git, puppemon
from tests.test_status import write_status

NOW = datetime(2026, 11, 25, 8, 40, tzinfo=timezone.utc)    # a Wednesday; 16:40 in Taipei, 17:40 in Tokyo
MANIFEST = """\
version: 1
defaults:
  timezone: Asia/Taipei
flows:
  daily-report:
    command: ["true"]
    schedule: "0 8 * * 1-5"
  backup:
    command: ["true"]
    every: 6h
    timezone: UTC
  rebuild-index:
    command: make index
    run_on_deploy: true
"""


@pytest.fixture
def tokyo(monkeypatch):
    """The viewer's local timezone is Asia/Tokyo (the flows' are Taipei and UTC)."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()


@pytest.fixture
def deployed(project, bare_remote):
    (project / "puppemon.yaml").write_text(MANIFEST)
    git("add", "-A", cwd=project)
    git("commit", "--quiet", "-m", "three flows", cwd=project)
    puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    write_status(bare_remote, "box", flows_commit=tip, flows={"backup": {"next": "2026-11-25T12:00:00.000Z"},
                                                             "daily-report": {"next": None}})
    return project


def show(project, capsys, monkeypatch, columns: int | None, *args, **kwargs) -> str:
    if columns is not None:
        monkeypatch.setenv("COLUMNS", str(columns))
    assert upcoming.main(*args, directory=str(project), now=NOW, **kwargs) == 0
    return capsys.readouterr().out


WIDE = """\
NEXT                   LEFT      FLOW            TRIGGER                          FLOW TIME
───────────────────────────────────────────────────────────────────────────────────────────────
2026-11-25 21:00 JST   3h 20m    backup          every 6h                         Wed 12:00 UTC
2026-11-26 03:00 JST   9h 20m    backup          every 6h                         Wed 18:00 UTC
2026-11-26 09:00 JST   15h 20m   daily-report    cron 0 8 * * 1-5 (Asia/Taipei)   Thu 08:00 CST
2026-11-27 09:00 JST   1d 15h    daily-report    cron 0 8 * * 1-5 (Asia/Taipei)   Fri 08:00 CST
next deploy            -         rebuild-index   on deploy                        -
"""


def columns_of(text: str, names: list[str]) -> str:
    """WIDE with only the columns `names`, laid out as plain_table lays them out."""
    from puppemon.ui import plain_table

    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(n) for n in ("NEXT", "LEFT", "FLOW ", "TRIGGER", "FLOW TIME")] + [None]
    cells = [[line[starts[i]:starts[i + 1]].strip() for i in range(5)] for line in [header] + lines[2:]]
    keep = [["NEXT", "LEFT", "FLOW", "TRIGGER", "FLOW TIME"].index(n) for n in names]
    return "\n".join(plain_table(names, [[row[i] for i in keep] for row in cells[1:]])) + "\n"


def test_upcoming_fits_120_80_and_60_columns(deployed, capsys, monkeypatch, tokyo):
    assert show(deployed, capsys, monkeypatch, 120, count=2) == WIDE
    assert show(deployed, capsys, monkeypatch, None, count=2) == WIDE      # off a terminal: every column
    at_80 = show(deployed, capsys, monkeypatch, 80, count=2)
    assert at_80 == columns_of(WIDE, ["NEXT", "LEFT", "FLOW", "TRIGGER"])
    at_60 = show(deployed, capsys, monkeypatch, 60, count=2)
    assert at_60 == columns_of(WIDE, ["NEXT", "LEFT", "FLOW"])
    assert at_60.splitlines()[2] == "2026-11-25 21:00 JST   3h 20m    backup"
    for text, width in ((at_80, 80), (at_60, 60)):
        assert max(len(line) for line in text.splitlines()) <= width
    narrow = show(deployed, capsys, monkeypatch, 30, count=1)    # ids and names are never cut
    assert narrow.splitlines()[2:] == ["2026-11-25 21:00 JST   backup", "2026-11-26 09:00 JST   daily-report",
                                       "next deploy            rebuild-index"]


def test_upcoming_marks_paused_flows_and_reads_as_json(deployed, capsys, monkeypatch, tokyo):
    puppemon("pause", "daily-report", "--reason", "holiday week", cwd=deployed)
    out = show(deployed, capsys, monkeypatch, 80, "daily-report", fetch=True)
    lines = out.splitlines()
    assert lines[2] == "2026-11-26 09:00 JST   paused   daily-report   cron 0 8 * * 1-5 (Asia/Taipei)"
    assert re.fullmatch(r"daily-report: paused \(holiday week\) by \S+@\S+ since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST",
                        lines[3]), lines[3]
    tip = git("-C", str(deployed), "rev-parse", "refs/puppemon/remote-flows").strip()
    data = json.loads(show(deployed, capsys, monkeypatch, None, as_json=True, count=2))
    assert data["source"] == {"kind": "deployed", "remote": "origin", "commit": tip}
    assert data["now"] == "2026-11-25T08:40:00.000Z"
    by_flow = {f["flow"]: f for f in data["flows"]}
    assert list(by_flow) == ["daily-report", "backup", "rebuild-index"]
    assert by_flow["backup"] == {"flow": "backup", "trigger": "every 6h", "timezone": "UTC",
                                 "next": ["2026-11-25T12:00:00.000Z", "2026-11-25T18:00:00.000Z"],
                                 "note": None, "paused": None, "runs_on": [], "on": ["box"]}
    assert by_flow["daily-report"]["next"] == ["2026-11-26T00:00:00.000Z", "2026-11-27T00:00:00.000Z"]
    assert by_flow["daily-report"]["paused"]["reason"] == "holiday week"
    assert by_flow["rebuild-index"]["note"] == "next deploy" and by_flow["rebuild-index"]["next"] == []


def test_upcoming_without_a_deploy_reads_the_working_tree_and_says_so(project, capsys, monkeypatch):
    (project / "puppemon.yaml").write_text(MANIFEST)
    out = show(project, capsys, monkeypatch, 120, count=1)
    assert capsys.readouterr().err == ""   # the note went out with the call above
    assert out.splitlines()[2:] == [   # an interval's grid is the epoch's: known without a daemon
        "2026-11-25 12:00 UTC   3h 20m    backup          every 6h                         Wed 12:00 UTC",
        "2026-11-26 00:00 UTC   15h 20m   daily-report    cron 0 8 * * 1-5 (Asia/Taipei)   Thu 08:00 CST",
        "next deploy            -         rebuild-index   on deploy                        -"]
    result = puppemon("upcoming", "nope", cwd=project, check=False)
    assert result.returncode == 1
    assert result.stderr == ("Error: no flow 'nope' in the puppemon.yaml here (flows: daily-report, backup, "
                             "rebuild-index)\n")
    shown = puppemon("upcoming", cwd=project)
    assert shown.stderr == "note: nothing is deployed on origin: showing puppemon.yaml here\n"
