"""`puppemon runs` and `puppemon logs`: history fetched from a real remote, printed exactly."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from puppemon.gitstore import Store
from puppemon.history.records import RunContext, run_files, run_message, synthetic_record, trigger_text
from puppemon.history.recorder import Recorder
from tests.conftest import git, make_repo, puppemon, puppemon_on_terminal

T0 = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)


def make_record(flow: str, minute: int, status: str = "succeeded", trigger: dict | None = None,
                seconds: float = 0.4, suffix: str = "7f3a9c", **extra) -> dict:
    started = T0 + timedelta(minutes=minute)
    ctx = RunContext(f"{started:%Y%m%dT%H%M%SZ}-{suffix}", flow, trigger or {"kind": "schedule"},
                     flows_commit="1a2b3c4d" * 5, daemon="server1")
    rec = synthetic_record(ctx, status, extra.pop("error", None), started, started + timedelta(seconds=seconds))
    rec.update(extra)
    return rec


def seed(remote: Path, tmp_path: Path, records: list[tuple[dict, bytes]], result=None) -> None:
    """Publish `records` (record, log) to `remote` through a recorder of its own, as a daemon would."""
    store = Store.open_or_init_bare(tmp_path / f"seeder-{len(list(tmp_path.glob('seeder-*')))}.git")
    recorder = Recorder(store, remote=str(remote))
    for rec, log in records:
        recorder.add(run_files(rec, log, result, result is not None and rec["status"] == "succeeded"),
                     run_message(rec))
    assert recorder.publish()


HISTORY = [
    (make_record("hello", 0), b"hello\n"),
    (make_record("backup", 1, "failed", seconds=75, error="exit code 3", suffix="0b0b0b"), b"disk full\n"),
    (make_record("hello", 2, "cancelled", {"kind": "manual", "by": "ann@laptop"}, suffix="aa0001"),
     b"cancelled\n"),
    (make_record("report", 3, "timed_out", {"kind": "deploy", "by": "1a2b3c4"}, seconds=3700,
                 suffix="cc0002"), b"slow\n"),
    (make_record("hello", 4, "skipped", suffix="dd0003"), b""),
]

HEADER = "id                        flow     status      trigger                started                duration"
TABLE = HEADER + "\n" + "─" * len(HEADER) + "\n" + """\
20261125T083400Z-dd0003   hello    skipped     schedule               2026-11-25 08:34 UTC   0.4s
20261125T083300Z-cc0002   report   timed_out   deploy                 2026-11-25 08:33 UTC   1h 01m
20261125T083200Z-aa0001   hello    cancelled   manual by ann@laptop   2026-11-25 08:32 UTC   0.4s
20261125T083100Z-0b0b0b   backup   failed      schedule               2026-11-25 08:31 UTC   1m 15s
20261125T083000Z-7f3a9c   hello    succeeded   schedule               2026-11-25 08:30 UTC   0.4s
"""


@pytest.fixture
def history(project, bare_remote, tmp_path) -> Path:
    seed(bare_remote, tmp_path, HISTORY)
    return project


def test_runs_fetches_into_the_local_runs_branch_and_prints_a_table(history, bare_remote):
    proc = puppemon("runs", cwd=history)
    assert proc.stderr == ""
    assert proc.stdout == TABLE
    # `git log runs` in the project shows the same history
    assert git("rev-parse", "runs", cwd=history) == git("--git-dir", str(bare_remote), "rev-parse", "runs")
    assert git("log", "--format=%s", "runs", cwd=history).splitlines()[0] == "hello: skipped in 0.4s (schedule)"


def test_runs_filters_and_json(history):
    records = json.loads(puppemon("runs", "--json", cwd=history).stdout)
    assert [r["id"] for r in records] == [rec["id"] for rec, _ in reversed(HISTORY)]
    assert records[-1] == HISTORY[0][0]
    by_flow = json.loads(puppemon("runs", "hello", "--json", "--no-fetch", cwd=history).stdout)
    assert [r["id"][-6:] for r in by_flow] == ["dd0003", "aa0001", "7f3a9c"]
    failed = json.loads(puppemon("runs", "--status", "failed", "--json", cwd=history).stdout)
    assert [r["flow"] for r in failed] == ["backup"]
    limited = json.loads(puppemon("runs", "-n", "2", "--json", cwd=history).stdout)
    assert [r["id"][-6:] for r in limited] == ["dd0003", "cc0002"]
    since = json.loads(puppemon("runs", "--since", "2026-11-25T08:32", "--json", cwd=history).stdout)
    assert [r["id"][-6:] for r in since] == ["dd0003", "cc0002", "aa0001"]
    assert json.loads(puppemon("runs", "--since", "1h", "--json", cwd=history).stdout) == []
    assert puppemon("runs", "hello", "--since", "1h", cwd=history).stdout == "no runs match\n"


def test_runs_colours_statuses_on_a_terminal(history):
    puppemon("runs", cwd=history)
    out = puppemon_on_terminal("runs", "--no-fetch", cwd=history)
    assert "\x1b[32msucceeded" in out and "\x1b[31mfailed" in out and "\x1b[31mtimed_out" in out
    assert "\x1b[33mcancelled" in out and "\x1b[33mskipped" in out
    # the same table as off a terminal (200 columns wide), once the colours are taken out
    assert re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r\n", "\n") == TABLE


def test_runs_table_off_a_terminal_is_plain_and_never_cut(project, bare_remote, tmp_path):
    """A pipe gets every column whole, however wide (rich cut cells to 120 columns with an ellipsis)."""
    who = "a-very-long-user-name@" + "build-host." * 8 + "example"
    rec = make_record("hello", 0, trigger={"kind": "manual", "by": who})
    seed(bare_remote, tmp_path, [(rec, b"")])
    proc = puppemon("runs", cwd=project, env={"COLUMNS": "40"})
    shown = trigger_text(rec["trigger"])
    assert len(shown) > 100
    header = f"{'id':<23}   {'flow':<5}   {'status':<9}   {'trigger':<{len(shown)}}   {'started':<20}   duration"
    assert proc.stdout == (f"{header}\n{'─' * len(header)}\n20261125T083000Z-7f3a9c   hello   succeeded   "
                           f"{shown}   2026-11-25 08:30 UTC   0.4s\n")


def test_runs_with_no_records(project):
    assert puppemon("runs", cwd=project).stdout == "no runs recorded yet\n"
    assert json.loads(puppemon("runs", "--json", cwd=project).stdout) == []


def test_unreachable_remote_warns_and_shows_local_records(history, tmp_path):
    puppemon("runs", cwd=history)
    missing = tmp_path / "gone.git"
    proc = puppemon("runs", "--remote", str(missing), "-n", "1", cwd=history)
    assert proc.stderr.startswith(f"warning: could not fetch from {missing}: ")
    assert proc.stderr.endswith("; showing local records only\n")
    assert proc.stderr.count("\n") == 1
    assert proc.stdout.splitlines()[2].startswith("20261125T083400Z-dd0003")


def test_runs_from_another_directory_with_C(history, tmp_path):
    assert puppemon("runs", "-C", str(history), "--json", cwd=tmp_path).returncode == 0


def test_bad_since_is_refused(history):
    proc = puppemon("runs", "--since", "yesterday", cwd=history, check=False)
    assert proc.returncode == 1
    assert proc.stderr == ("Error: --since 'yesterday': expected a duration (30m, 2h, 7d) or a date "
                           "(2026-11-25, 2026-11-25T08:00)\n")


# --- logs ---------------------------------------------------------------------

def test_logs_by_id_prefix_and_flow(history):
    proc = puppemon("logs", "20261125T083100Z-0b0b0b", cwd=history)
    assert proc.stdout == "disk full\n"
    assert proc.stderr == ("backup 20261125T083100Z-0b0b0b failed (schedule) started 2026-11-25 08:31:00 UTC, "
                           "1m 15s, flows 1a2b3c4, on server1\nerror: exit code 3\n")
    assert puppemon("logs", "20261125T0832", cwd=history).stdout == "cancelled\n"
    assert puppemon("logs", "cc0002", cwd=history).stdout == "slow\n"
    latest = puppemon("logs", "hello", cwd=history)
    assert latest.stderr.startswith("hello 20261125T083400Z-dd0003 skipped (schedule) started ")
    assert latest.stdout == ""


def test_logs_in_another_timezone(history):
    proc = puppemon("logs", "backup", cwd=history, env={"TZ": "Asia/Taipei"})
    assert proc.stderr.splitlines()[0] == ("backup 20261125T083100Z-0b0b0b failed (schedule) started "
                                           "2026-11-25 16:31:00 CST, 1m 15s, flows 1a2b3c4, on server1")


def test_logs_errors(history):
    ambiguous = puppemon("logs", "2026", cwd=history, check=False)
    assert ambiguous.returncode == 1
    assert ambiguous.stderr.startswith("Error: '2026' matches 5 runs; give more of the id:\n"
                                       "  20261125T083000Z-7f3a9c  hello  finished\n")
    assert len(ambiguous.stderr.splitlines()) == 6
    missing = puppemon("logs", "nope", cwd=history, check=False)
    assert missing.stderr == "Error: no run with id 'nope'; list runs with `puppemon runs`\n"


def test_logs_with_no_runs(project):
    proc = puppemon("logs", "hello", cwd=project, check=False)
    assert (proc.returncode, proc.stderr) == (1, "Error: no runs recorded yet\n")


# --- real runs by a real daemon -----------------------------------------------

DAEMON_MANIFEST = """\
version: 1
flows:
  greet:
    entrypoint: greet.py:main
    run_on_deploy: true
    params: {name: git}
  broken:
    command: "echo going down; exit 3"
    run_on_deploy: true
"""

GREET = """\
import puppemon


def main(name):
    print(f"hi {name}")
    (puppemon.output_dir() / "note.txt").write_text("noted\\n")
    return {"name": name}
"""


def daemon_once(remote: Path, state: Path) -> None:
    puppemon("daemon", "--remote", str(remote), "--state", str(state), "--once", "--name", "box")


def test_records_of_a_real_daemon(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "proj", {"puppemon.yaml": DAEMON_MANIFEST, "greet.py": GREET})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    daemon_once(bare_remote, tmp_path / "state")
    records = {r["flow"]: r for r in json.loads(puppemon("runs", "--json", cwd=repo).stdout)}
    assert {f: r["status"] for f, r in records.items()} == {"greet": "succeeded", "broken": "failed"}
    assert records["broken"]["exit_code"] == 3
    logs = puppemon("logs", "greet", cwd=repo)
    assert logs.stdout == "hi git\n"
    flows_tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    assert logs.stderr.startswith(f"greet {records['greet']['id']} succeeded (deploy) started ")
    assert f", flows {flows_tip[:7]}, on box\n" in logs.stderr
    assert json.loads(puppemon("logs", "greet", "--result", cwd=repo).stdout) == {"name": "git"}
    assert puppemon("logs", "greet", "--outputs", cwd=repo).stdout == "         6  note.txt\n"
    assert puppemon("logs", "broken", cwd=repo).stdout == "going down\n"
    assert git("log", "--format=%s", "runs", "--grep", "Puppemon-Status: failed", cwd=repo).startswith(
        "broken: failed in ")
    git("fsck", "--strict", "--no-dangling", cwd=repo)
