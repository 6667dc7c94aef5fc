"""One id end to end: `trigger` prints the run's id, and `logs`, `runs`, `cancel` take it (or a unique prefix)
whether the run is requested, queued, running or finished; `cancel` withdraws or stops, and says which."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import puppemon, wait_until
from tests.test_trigger import daemons, records_for, remote_files, remote_json, run_once, setup_project  # noqa: F401

MANIFEST = """\
version: 1
flows:
  slow:
    command: echo started; exec sleep 60
  marker:
    command: echo ran > {marker}
"""


def project(tmp_path: Path, remote: Path) -> tuple[Path, Path]:
    marker = tmp_path / "marker-ran"    # outside every workdir: it exists only if the run started
    return setup_project(tmp_path, remote, MANIFEST.format(marker=marker)), marker


def request_path(rid: str, suffix: str = "") -> str:
    return f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}{suffix}.json"


def test_trigger_json_and_an_unclaimed_request_withdrawn_by_the_daemon_that_claims_it(tmp_path, bare_remote):
    repo, marker = project(tmp_path, bare_remote)
    out = puppemon("trigger", "marker", "--json", cwd=repo).stdout
    shown = json.loads(out)
    rid = shown["id"]
    assert set(shown) == {"id", "flow", "params", "by", "time", "remote"}
    assert (shown["flow"], shown["params"], shown["remote"]) == ("marker", {}, "origin")
    assert request_path(rid) in remote_files(bare_remote)
    assert puppemon("trigger", "marker", "--json", "--wait", cwd=repo, check=False).stderr == (
        "Error: --json cannot be combined with --wait; trigger --json, then `puppemon logs ID`\n")
    # no daemon yet: the run is requested, and every reader says so
    logs = puppemon("logs", rid, cwd=repo)
    assert (logs.stdout, logs.stderr) == ("", f"run {rid} (marker) is requested: no daemon has taken it yet; "
                                              f"its log is recorded when it ends (`puppemon logs -f {rid}` follows it)\n")
    [row] = json.loads(puppemon("runs", rid[:20], "--json", cwd=repo).stdout)
    assert (row["id"], row["flow"], row["status"]) == (rid, "marker", "requested")
    cancel = puppemon("cancel", rid[:20], "--json", cwd=repo)
    said = json.loads(cancel.stdout)
    assert {k: said[k] for k in ("id", "flow", "action", "state", "daemon")} == {
        "id": rid, "flow": "marker", "action": "withdrawn", "state": "requested", "daemon": None}
    assert set(said) == {"id", "flow", "action", "state", "daemon", "cancel_request"}
    # the daemon claims the request, sees the cancel before it starts the run: it never starts
    assert run_once(bare_remote, tmp_path / "state").returncode == 0
    [record] = records_for(bare_remote, rid)
    assert (record["id"], record["status"]) == (rid, "cancelled")
    assert record["error"] == f"withdrawn before it started (cancel request {said['cancel_request']})"
    assert not marker.exists()
    assert remote_json(bare_remote, request_path(said["cancel_request"], ".done"))["outcome"] == (
        "withdrawn before it started")
    assert run_once(bare_remote, tmp_path / "state").returncode == 0   # and a restart does not run it either
    assert not marker.exists() and len(records_for(bare_remote, rid)) == 1
    again = puppemon("cancel", rid, cwd=repo, check=False)
    assert (again.returncode, again.stdout) == (1, "")
    assert again.stderr == f"Error: run {rid} (marker) finished: cancelled: nothing to cancel\n"


def test_an_ambiguous_prefix_lists_the_candidates_and_unknown_ids_are_errors(tmp_path, bare_remote):
    repo, _marker = project(tmp_path, bare_remote)
    first = puppemon("trigger", "marker", cwd=repo).stdout.strip()
    second = puppemon("trigger", "slow", cwd=repo).stdout.strip()
    common = next(i for i in range(len(first)) if first[i] != second[i])
    for command in ("logs", "cancel", "runs"):
        proc = puppemon(command, first[:max(common, 8)], cwd=repo, check=False)
        assert proc.returncode == 1, command
        assert proc.stderr.splitlines() == [
            f"Error: {first[:max(common, 8)]!r} matches 2 runs; give more of the id:",
            *sorted([f"  {first}  marker  requested", f"  {second}  slow  requested"])], command
    unknown = "20200101T000000Z-abcdef"
    for command in ("logs", "cancel"):
        proc = puppemon(command, unknown, cwd=repo, check=False)
        assert (proc.returncode, proc.stderr) == (
            1, f"Error: no run with id {unknown!r}; list runs with `puppemon runs`\n"), command
    assert puppemon("cancel", cwd=repo, check=False).stderr == (
        "Error: give a run id (or a unique part of one) or --flow NAME, one of the two\n")
    assert puppemon("cancel", "--flow", "marker", "--timeout", "3", cwd=repo, check=False).stderr == (
        "Error: --timeout goes with --wait\n")
    assert puppemon("cancel", "--flow", "nosuch", cwd=repo, check=False).stderr == (
        "Error: no run of nosuch is requested, queued or running: nothing to cancel\n")


@pytest.mark.slow
def test_cancel_withdraws_a_queued_run_and_stops_a_running_one(tmp_path, bare_remote, daemons):  # noqa: F811
    repo, marker = project(tmp_path, bare_remote)
    d = daemons(bare_remote, tmp_path / "state", "--max-parallel", "1")
    slow = puppemon("trigger", "slow", cwd=repo).stdout.strip()
    wait_until(lambda: "slow: started run" in d.log, 30, "the slow run to start", lambda: d.log)
    queued = puppemon("trigger", "marker", cwd=repo).stdout.strip()
    wait_until(lambda: request_path(queued, ".claim") in remote_files(bare_remote), 30, "the claim", lambda: d.log)
    assert remote_json(bare_remote, request_path(queued, ".claim"))["run_id"] == queued
    # the run waits for the one slot: it is queued
    logs = puppemon("logs", queued[:22], "--fetch", cwd=repo)
    assert logs.stderr == (f"run {queued} (marker) is queued on d1: it has not started yet; "
                           f"its log is recorded when it ends (`puppemon logs -f {queued}` follows it)\n")
    running = wait_until(lambda: "running" in puppemon("logs", slow, "--fetch", cwd=repo).stderr, 15,
                         "status to show the run in flight")
    assert running
    withdrawn = puppemon("cancel", queued[:22], cwd=repo).stdout
    assert withdrawn.startswith(f"withdrawn: run {queued} (marker) was queued and will not start (cancel request ")
    stopped = puppemon("cancel", slow, "--wait", "--timeout", "30", "--json", cwd=repo)
    said = json.loads(stopped.stdout)
    assert {k: said[k] for k in ("id", "flow", "action", "state", "daemon", "status")} == {
        "id": slow, "flow": "slow", "action": "stopping", "state": "running", "daemon": "d1", "status": "cancelled"}
    [record] = wait_until(lambda: records_for(bare_remote, queued), 30, "the withdrawn record", lambda: d.log)
    assert record["status"] == "cancelled" and record["error"].startswith("withdrawn before it started")
    assert d.stop() == 0
    assert not marker.exists()
    log = puppemon("logs", slow, cwd=repo)
    assert log.stdout == "started\n" and f"slow {slow} cancelled" in log.stderr


@pytest.mark.slow
def test_cancel_flow_stops_its_running_and_queued_runs_and_waits(tmp_path, bare_remote, daemons):  # noqa: F811
    repo, _marker = project(tmp_path, bare_remote)
    d = daemons(bare_remote, tmp_path / "state")
    first = puppemon("trigger", "slow", cwd=repo).stdout.strip()
    wait_until(lambda: "slow: started run" in d.log, 30, "the slow run to start", lambda: d.log)
    second = puppemon("trigger", "slow", cwd=repo).stdout.strip()   # one run of a flow at a time: queued
    wait_until(lambda: request_path(second, ".claim") in remote_files(bare_remote), 30, "the claim", lambda: d.log)
    wait_until(lambda: "running" in puppemon("logs", first, "--fetch", cwd=repo).stderr, 15,
               "status to show the run in flight")
    proc = puppemon("cancel", "--flow", "slow", "--wait", "--timeout", "30", cwd=repo)
    lines = proc.stdout.splitlines()
    # the queued run is withdrawn before the running one is stopped, so it cannot take the slot freed
    assert lines[0].startswith(f"withdrawn: run {second} (slow) was queued and will not start")
    assert lines[1].startswith(f"stopping: run {first} (slow) on d1 (cancel request ")
    [stopped], [withdrawn] = records_for(bare_remote, first), records_for(bare_remote, second)
    assert sorted(lines[2:]) == sorted([f"run {first} (slow): cancelled in {stopped['duration']:.1f}s",
                                        f"run {second} (slow): {withdrawn['error']}"])
    assert withdrawn["status"] == "cancelled" and withdrawn["error"].startswith("withdrawn before it started")
    assert d.stop() == 0
