"""`puppemon status`: the daemons' status refs, fetched from a real remote and printed exactly."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from puppemon.commands import status as status_cmd
from puppemon.formats import format_age, utc_iso
from puppemon.gitstore import Store
from puppemon.history.records import dump_json
from tests.conftest import git, make_repo, puppemon, puppemon_on_terminal
from tests.test_runs_logs import HISTORY, seed

NOW = datetime(2026, 11, 25, 8, 40, tzinfo=timezone.utc)


def write_status(bare: Path, name: str, **fields) -> dict:
    """Put a status.json on refs/puppemon/status/<name> of `bare`, the way a daemon does."""
    status = {"schema": 1, "name": name, "host": "server", "pid": 4242, "version": "0.1.0",
              "started": "2026-11-25T08:00:00.000Z", "heartbeat": "2026-11-25T08:39:48.000Z",
              "state": "running", "flows_commit": None, "flows": {}, "in_flight": [], "unpublished": 0}
    status.update(fields)
    store = Store(bare)
    tree = store.update_tree(None, {"status.json": (store.blob(dump_json(status)), 0o100644)})
    store.force_ref(f"refs/puppemon/status/{name}", store.commit(tree, [], f"status of {name}\n"))
    return status


@pytest.fixture
def pushed(project, bare_remote, tmp_path) -> tuple[Path, str]:
    puppemon("push", cwd=project)
    seed(bare_remote, tmp_path, HISTORY)
    return project, git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()


def show(project: Path, capsys, **kwargs) -> str:
    assert status_cmd.main(directory=str(project), now=NOW, **kwargs) == 0
    return capsys.readouterr().out


def test_daemons_with_flows_heartbeats_and_runs_in_flight(pushed, bare_remote, capsys):
    project, tip = pushed
    write_status(bare_remote, "alpha", flows_commit=tip,
                 flows={"hello": {"next": "2026-11-25T09:00:00.000Z"}, "report": {"next": None},
                        "fresh": {"next": "2026-11-25T08:45:30.000Z"}},
                 in_flight=[{"run_id": "20261125T083930Z-abcdef", "flow": "report",
                             "started": "2026-11-25T08:39:30.000Z"}])
    write_status(bare_remote, "beta", heartbeat="2026-11-25T08:30:00.000Z", state="stopped",
                 flows_commit="0" * 40, flows={}, unpublished=2)
    assert show(project, capsys) == f"""\
alpha: running, heartbeat 12 s ago
  on server, pid 4242, puppemon 0.1.0
  deployed {tip[:7]}: up to date
  flow     next                      last run
  fresh    2026-11-25 08:45:30 UTC   -
  hello    2026-11-25 09:00:00 UTC   skipped     20261125T083400Z-dd0003
  report   -                         timed_out   20261125T083300Z-cc0002
  running: report 20261125T083930Z-abcdef since 2026-11-25 08:39:30 UTC

beta: gone (was stopped), last heartbeat 10 min ago
  on server, pid 4242, puppemon 0.1.0
  deployed 0000000; the remote has {tip[:7]} now
  no runs in flight
  2 records not yet pushed

1 daemon gone (no heartbeat for 5m or more)
remove with `puppemon status --prune-gone`
"""
    data = json.loads(puppemon("status", "--json", cwd=project).stdout)
    assert data["remote"] == "origin" and data["flows_tip"] == tip
    alpha, beta = data["daemons"]
    assert (alpha["name"], alpha["up_to_date"], beta["up_to_date"]) == ("alpha", True, False)
    assert alpha["flows"]["hello"]["last_run"] == {"id": "20261125T083400Z-dd0003", "status": "skipped",
                                                   "started": "2026-11-25T08:34:00.000Z"}
    assert alpha["flows"]["fresh"]["last_run"] is None
    assert beta["stale"] is True and beta["heartbeat_age"] > 180
    at_now = json.loads(show(project, capsys, as_json=True))["daemons"]
    assert [(d["name"], d["gone"], d["gone_after"]) for d in at_now] == [("alpha", False, 300), ("beta", True, 300)]


def test_stale_heartbeat_is_red_and_ages_read_well():
    daemon = {"name": "a", "host": "h", "pid": 1, "version": "0", "state": "running", "heartbeat_age": 181.0,
              "stale": True, "flows_commit": None, "flows_tip": None, "flows": {}, "in_flight": []}
    assert status_cmd.render(daemon)[0][-1] == ("3 min ago", "red")
    daemon.update(heartbeat_age=179.0, stale=False)
    assert status_cmd.render(daemon)[0][-1] == ("2 min ago", None)
    assert "".join(c if isinstance(c, str) else c[0] for c in status_cmd.render(daemon)[0]).endswith(
        "heartbeat 2 min ago")
    assert [format_age(s) for s in (0, 12.7, 119, 120, 7199, 7200, 172799, 172800)] == [
        "0 s ago", "12 s ago", "119 s ago", "2 min ago", "119 min ago", "2 h ago", "47 h ago", "2 d ago"]


def test_status_on_a_terminal_is_coloured_and_says_the_same(pushed, bare_remote):
    project, tip = pushed
    write_status(bare_remote, "alpha", flows_commit=tip, host="[bold]srv[/] :smile:",
                 heartbeat=utc_iso(datetime.now(timezone.utc) - timedelta(seconds=150)))  # "2 min ago" for 90 s
    plain = puppemon("status", cwd=project).stdout
    beat = plain.split("heartbeat ")[1].splitlines()[0]
    assert plain.splitlines()[:3] == [f"alpha: running, heartbeat {beat}",
                                      "  on [bold]srv[/] :smile:, pid 4242, puppemon 0.1.0",
                                      f"  deployed {tip[:7]}: up to date"]
    out = puppemon_on_terminal("status", "--no-fetch", cwd=project)
    assert "\x1b[1malpha" in out and "\x1b[32mup to date" in out
    assert re.sub(r"\x1b\[[0-9;]*m", "", out).replace("\r\n", "\n") == plain


def test_no_daemon_yet(project, capsys):
    assert puppemon("status", cwd=project).stdout == "no daemon has reported to origin yet\n"
    assert json.loads(puppemon("status", "--json", cwd=project).stdout) == {
        "remote": "origin", "flows_tip": None, "daemons": [], "paused": {}, "unplaced": []}


def test_a_daemon_gone_from_the_remote_is_gone_here(pushed, bare_remote, capsys):
    project, tip = pushed
    write_status(bare_remote, "old", flows_commit=tip)
    write_status(bare_remote, "new", flows_commit=tip)
    assert [d["name"] for d in json.loads(puppemon("status", "--json", cwd=project).stdout)["daemons"]] == [
        "new", "old"]
    git("--git-dir", str(bare_remote), "update-ref", "-d", "refs/puppemon/status/old")
    # --fetch: the ref went moments after the last fetch, within the window a plain read reuses it
    assert [d["name"] for d in json.loads(puppemon("status", "--json", "--fetch", cwd=project).stdout)[
        "daemons"]] == ["new"]
    refs = git("for-each-ref", "--format=%(refname)", "refs/puppemon", cwd=project).split()
    assert "refs/puppemon/status/new" in refs and "refs/puppemon/status/old" not in refs
    assert not [r for r in refs if "fetching" in r]  # the scratch namespace is cleaned up


def test_unreachable_remote_shows_the_last_fetched_status(pushed, bare_remote, tmp_path, capsys):
    project, tip = pushed
    write_status(bare_remote, "alpha", flows_commit=tip)
    puppemon("status", cwd=project)
    git("remote", "set-url", "origin", str(tmp_path / "gone.git"), cwd=project)
    proc = puppemon("status", "--json", cwd=project)
    assert "warning: could not fetch from origin: " in proc.stderr
    assert proc.stderr.endswith("; showing the status last fetched\n")
    assert [d["name"] for d in json.loads(proc.stdout)["daemons"]] == ["alpha"]


MANIFEST = """\
version: 1
flows:
  hello:
    command: echo hello
    run_on_deploy: true
  nightly:
    command: echo nightly
    schedule: "0 3 * * *"
"""


def test_a_real_daemon_then_a_new_deploy(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "proj", {"puppemon.yaml": MANIFEST})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"), "--once",
             "--name", "box")
    first = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    data = json.loads(puppemon("status", "--json", cwd=repo).stdout)
    (box,) = data["daemons"]
    assert (box["name"], box["flows_commit"], box["up_to_date"], box["stale"]) == ("box", first, True, False)
    assert box["flows"]["hello"]["last_run"]["status"] == "succeeded"
    assert box["flows"]["nightly"]["last_run"] is None
    assert box["in_flight"] == []
    # a --once daemon has no scheduler left, but says when it is due to be started again
    assert (box["once"], box["poll"], box["gone"]) == (True, 60.0, False)
    due = datetime.fromisoformat(box["flows"]["nightly"]["next"].replace("Z", "+00:00"))
    assert (due.hour, due.minute) == (3, 0) and timedelta(0) < due - datetime.now(timezone.utc) <= timedelta(days=1)
    assert box["flows"]["hello"]["next"] is None   # on deploy only
    out = puppemon("status", cwd=repo).stdout.splitlines()
    assert out[0].startswith("box: ran once, last heartbeat ") and out[0].endswith(" s ago")
    assert out[2] == f"  deployed {first[:7]}: up to date"
    assert out[3] == f"  next start due: nightly at {due:%Y-%m-%d} 03:00:00 UTC"
    (repo / "puppemon.yaml").write_text(MANIFEST.replace("echo hello", "echo hello again"))
    puppemon("push", cwd=repo)
    second = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    out = puppemon("status", cwd=repo).stdout.splitlines()
    # it stopped: it deploys nothing until it is started again
    assert out[2] == f"  deployed {first[:7]}; the remote has {second[:7]} now"


def test_status_refs_anyone_could_push_are_skipped_and_counted(pushed, bare_remote, capsys):
    project, tip = pushed
    write_status(bare_remote, "good", flows_commit=tip, host="[bold red]srv[/]")
    store = Store(bare_remote)
    for name, body in [("a-list", b"[1, 2]\n"), ("bad-time", dump_json({"heartbeat": "yesterday"})),
                       ("bad-flow", dump_json({"name": "x", "flows": {"../x": {"next": None}}})),
                       ("deep", b"[" * 100_000 + b"]" * 100_000), ("huge", b" " * (1024**2 + 1) + b"{}")]:
        tree = store.update_tree(None, {"status.json": (store.blob(body), 0o100644)})
        store.force_ref(f"refs/puppemon/status/{name}", store.commit(tree, [], "status\n"))
    store.force_ref("refs/puppemon/status/a-blob", store.blob(b"{}"))
    assert show(project, capsys).splitlines()[:2] == [
        "good: running, heartbeat 12 s ago", "  on [bold red]srv[/], pid 4242, puppemon 0.1.0"]
    assert capsys.readouterr().err == ""  # show() read it: the warning went with the first call
    proc = puppemon("status", cwd=project)
    assert proc.stderr == "warning: 6 status refs under refs/puppemon/status/ could not be read (skipped)\n"
    assert proc.stdout.splitlines()[1] == "  on [bold red]srv[/], pid 4242, puppemon 0.1.0"


def test_prune_gone_removes_the_status_and_live_refs_of_gone_daemons(pushed, bare_remote):
    project, tip = pushed
    now = datetime.now(timezone.utc)
    write_status(bare_remote, "alive", flows_commit=tip, heartbeat=utc_iso(now))
    write_status(bare_remote, "old", heartbeat=utc_iso(now - timedelta(minutes=6)))
    write_status(bare_remote, "slow-poll", heartbeat=utc_iso(now - timedelta(minutes=6)), poll=600)  # bound 30 min
    store = Store(bare_remote)
    tree = store.update_tree(None, {"runs.json": (store.blob(b"{}"), 0o100644)})
    store.force_ref("refs/puppemon/live/old", store.commit(tree, [], "live logs of old\n"))
    proc = puppemon("status", "--prune-gone", cwd=project)
    assert proc.stdout == ("removed refs/puppemon/status/old from origin\n"
                           "removed refs/puppemon/live/old from origin\n")
    refs = git("--git-dir", str(bare_remote), "for-each-ref", "--format=%(refname)", "refs/puppemon").split()
    assert refs == ["refs/puppemon/status/alive", "refs/puppemon/status/slow-poll"]
    assert "refs/puppemon/status/old" not in git("for-each-ref", "refs/puppemon", cwd=project)
    assert puppemon("status", "--prune-gone", cwd=project).stdout == "no daemon is gone\n"
    assert [d["name"] for d in json.loads(puppemon("status", "--json", cwd=project).stdout)["daemons"]] == [
        "alive", "slow-poll"]
