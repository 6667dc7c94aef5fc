"""Pausing flows (control/flows/<flow>.json on the runs branch) and runs in flight (SIGSTOP), end to end:
the real CLI writes the state, real daemons (in-process with the test's clock, or as subprocesses)
honour it, and the real git binary reads what was written."""
from __future__ import annotations

import json
import logging
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from puppemon.gitstore import Store
from tests.conftest import git, puppemon, wait_until
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, linear, manifest_project, of_flow, remote_records,
                                  run_daemon_once)
from tests.test_daemon_inprocess import T0, Clock, idle, in_flight, running
from tests.test_httpd import call
from tests.test_prune import seed

HOURLY = 'version: 1\nflows:\n  tick:\n    command: ["true"]\n    every: 1h\n  other:\n    command: ["true"]\n'
BY = re.compile(r"\S+@\S+")


def control(bare: Path, flow: str) -> dict:
    return json.loads(git("--git-dir", str(bare), "show", f"runs:control/flows/{flow}.json"))


def subjects(bare: Path) -> list[str]:
    return git("--git-dir", str(bare), "log", "--format=%s", "runs").splitlines()


def test_pause_and_resume_write_who_and_why_on_the_runs_branch(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    out = puppemon("pause", "tick", "--reason", "disk full", cwd=repo)
    assert out.stdout == "paused tick: no scheduled or requested run starts until `puppemon resume`\n"
    state = control(bare_remote, "tick")
    assert {k: state[k] for k in ("schema", "flow", "paused", "reason")} == {
        "schema": 1, "flow": "tick", "paused": True, "reason": "disk full"}
    assert BY.fullmatch(state["by"]) and state["time"].endswith("Z")
    assert subjects(bare_remote)[0] == f"pause tick: disk full (by {state['by']})"

    again = puppemon("pause", "tick", cwd=repo)   # says so, writes nothing, exits 0
    assert again.stdout.startswith(f"tick is already paused (disk full) by {state['by']} since ")
    assert len(subjects(bare_remote)) == 1

    resumed = json.loads(puppemon("resume", "tick", "--json", cwd=repo).stdout)
    assert resumed["action"] == "resume" and resumed["unchanged"] == []
    (written,) = resumed["written"]
    assert written == {**control(bare_remote, "tick"), "catch_up": False} and written["paused"] is False
    assert subjects(bare_remote)[0] == f"resume tick (by {state['by']})"

    both = json.loads(puppemon("pause", "--all", "--reason", "maintenance", "--json", cwd=repo).stdout)
    assert [s["flow"] for s in both["written"]] == ["tick", "other"]
    assert subjects(bare_remote)[0] == f"pause 2 flows: maintenance (by {state['by']})"   # one commit for all
    trailers = git("--git-dir", str(bare_remote), "log", "-1", "--format=%b", "runs")
    assert "Puppemon-Control: pause\nPuppemon-Flow: tick\nPuppemon-Flow: other\n" in trailers
    assert puppemon("resume", "--all", cwd=repo).stdout == (
        "resumed tick, other: fires missed while paused are not run (--catch-up runs one)\n")
    fsck(bare_remote)
    assert linear(bare_remote)


def test_pause_checks_its_arguments_against_the_deployed_flows(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    nothing = puppemon("pause", "tick", cwd=repo, check=False)
    assert (nothing.returncode, nothing.stderr) == (
        1, "Error: nothing is deployed on origin yet: run `puppemon push` first\n")
    deploy(repo)
    flows = git("--git-dir", str(bare_remote), "rev-parse", "--short=7", "flows").strip()
    for args, error in [
        (["tock"], f"no flow 'tock' in the deployed flows (flows {flows} on origin: tick, other); "
                   "did you mean 'tick'?"),
        ([], "name a flow (`puppemon pause FLOW`), pass --all, or --run RUN_ID for a run in flight"),
        (["tick", "--all"], "name a flow (`puppemon pause FLOW`), pass --all, or --run RUN_ID for a run in flight"),
        (["--run", "nope"], "no runs recorded yet"),
        (["--run", "no/pe"], "'no/pe' is not a run id or part of one (e.g. 20261125T083000Z-7f3a9c)"),
    ]:
        result = puppemon("pause", *args, cwd=repo, check=False)
        assert (result.returncode, result.stderr) == (1, f"Error: {error}\n"), args
    assert "runs" not in git("--git-dir", str(bare_remote), "branch")


def test_a_paused_flow_fires_nothing_and_a_resume_fires_nothing_extra(tmp_path, bare_remote, caplog):
    caplog.set_level(logging.INFO, "puppemon")
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    with running(bare_remote, tmp_path / "state", Clock()) as daemon:
        daemon.cycle()
        puppemon("pause", "tick", "--reason", "disk full", cwd=repo)
        daemon.cycle()
        for hour in (1, 2, 3):
            daemon.fire("tick", T0 + timedelta(hours=hour))
        assert not daemon.queue.busy()
        daemon.cycle()
        daemon.publish()
        assert of_flow(remote_records(bare_remote), "tick") == []
        assert caplog.text.count("tick is paused (disk full) by ") == 1   # once, not once per fire
        puppemon("resume", "tick", cwd=repo)
        daemon.cycle()
        assert not daemon.queue.busy()                 # nothing for the three missed fires
        daemon.fire("tick", T0 + timedelta(hours=4))
        idle(daemon)
    assert [r["scheduled"] for r in of_flow(remote_records(bare_remote), "tick")] == ["2026-11-25T12:00:00.000Z"]


def test_resume_with_catch_up_runs_once_for_the_fires_missed(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    state = tmp_path / "state"
    with running(bare_remote, state, Clock()) as daemon:
        daemon.cycle()
        puppemon("pause", "tick", cwd=repo)
        daemon.cycle()
        for hour in (1, 2, 3):
            daemon.fire("tick", T0 + timedelta(hours=hour))
    # the resume lands while the daemon is stopped: the next start still sees it as a resume
    puppemon("resume", "tick", "--catch-up", cwd=repo)
    with running(bare_remote, state, Clock(T0 + timedelta(hours=3, minutes=5))) as daemon:
        daemon.cycle()
        idle(daemon)
        daemon.cycle()                                  # read again: no second catch-up
        assert not daemon.queue.busy()
    (run,) = of_flow(remote_records(bare_remote), "tick")
    assert run["scheduled"] == "2026-11-25T11:00:00.000Z" and run["status"] == "succeeded"
    assert run["trigger"]["kind"] == "catchup" and run["trigger"]["by"].startswith("resume --catch-up by ")


def test_a_pause_survives_a_redeploy_and_a_restart(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    state = tmp_path / "state"
    with running(bare_remote, state, Clock()) as daemon:
        daemon.cycle()
        puppemon("pause", "tick", cwd=repo)
        deploy(repo, HOURLY.replace("every: 1h", "every: 30m"))
        daemon.cycle()
        assert daemon.deployer.current.manifest.flows["tick"].triggers[0].describe() == "every 30m"
        daemon.fire("tick", T0 + timedelta(minutes=30))
        assert not daemon.queue.busy()
    with running(bare_remote, state, Clock(T0 + timedelta(hours=1))) as daemon:
        daemon.cycle()
        daemon.fire("tick", T0 + timedelta(hours=1, minutes=30))
        assert not daemon.queue.busy()
        assert daemon.status()["flows"]["tick"]["paused"]["paused"] is True
    assert of_flow(remote_records(bare_remote), "tick") == []


def test_a_request_for_a_paused_flow_is_recorded_skipped_and_the_hook_refuses(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    clock = Clock(datetime.now(timezone.utc))          # requests are read by the date they were written
    with running(bare_remote, tmp_path / "state", clock, listen="127.0.0.1:0") as daemon:
        daemon.http.start()
        port = daemon.http.address[1]
        daemon.cycle()
        puppemon("pause", "other", "--reason", "moving house", cwd=repo)
        rid = puppemon("trigger", "other", cwd=repo).stdout.strip()
        daemon.cycle()
        daemon.cycle()
        idle(daemon)
        status, body = call(port, "POST", "/flows/other/runs", {"params": {}}, token=None)
        assert status == 409 and body["error"].startswith("flow 'other' is paused (moving house) by ")
        assert body["error"].endswith(": `puppemon resume other` first")
        assert call(port, "POST", "/flows/tick/runs", {"params": {}}, token=None)[0] == 202
        idle(daemon)
    (run,) = of_flow(remote_records(bare_remote), "other")      # the request's, none for the hook's
    assert run["status"] == "skipped" and run["request"] == rid
    assert run["error"].startswith("not run: flow 'other' is paused (moving house) by ")
    assert run["error"].endswith("(`puppemon resume` it first)")
    assert len(of_flow(remote_records(bare_remote), "tick")) == 1


def test_rotation_and_prune_keep_the_control_state_on_the_tip(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), 'version: 1\nflows:\n  job:\n    command: ["true"]\n')
    deploy(repo)
    seed(Store(bare_remote), str(bare_remote), [40, 35, 2])
    puppemon("pause", "job", "--reason", "kept", cwd=repo)
    result = run_daemon_once(str(bare_remote), tmp_path / "state", "--rotate-after", "1")
    assert "rotated 3 runs" in result.stderr, result.stderr
    assert control(bare_remote, "job")["reason"] == "kept"
    puppemon("prune", "--before", "1d", cwd=repo)
    tip = git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs").split()
    assert "control/flows/job.json" in tip and not any(p.startswith("runs/") for p in tip)
    assert control(bare_remote, "job")["reason"] == "kept"


def started_runs(daemon: DaemonProcess) -> list[str]:
    return re.findall(r"tick: started run (\S+)", daemon.log)


def settled(daemon: DaemonProcess) -> bool:
    """Every run it started has ended."""
    return len(started_runs(daemon)) == len(re.findall(r"tick: \w+ in [\d.]+s \(run ", daemon.log))


def test_two_daemons_both_honour_a_pause_across_a_redeploy_and_a_restart(tmp_path, bare_remote):
    manifest = 'version: 1\nflows:\n  tick:\n    command: ["true"]\n    every: 1s\n'
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    one = DaemonProcess(str(bare_remote), tmp_path / "s1", name="d1")
    two = DaemonProcess(str(bare_remote), tmp_path / "s2", name="d2")
    with one, two:
        wait_until(lambda: started_runs(one) and started_runs(two), 20, "both daemons running tick")
        puppemon("pause", "tick", "--reason", "window", cwd=repo)
        wait_until(lambda: "tick is paused (window)" in one.log and "tick is paused (window)" in two.log
                   and settled(one) and settled(two), 10, "both daemons reading the pause",
                   lambda: one.log + two.log)
        counts = (len(started_runs(one)), len(started_runs(two)))
        deploy(repo, manifest.replace("every: 1s", "every: 2s"))
        wait_until(lambda: one.log.count("deployed ") >= 2 and two.log.count("deployed ") >= 2, 10, "the redeploy")
        assert one.stop() == 0
        restarted = DaemonProcess(str(bare_remote), tmp_path / "s1", name="d1")
        with restarted:
            wait_until(lambda: "tick is paused (window)" in restarted.log, 10, "the restart reading the pause")
            time.sleep(2.5)   # what is observed is an absence: two-second fires that start nothing
            assert (len(started_runs(one)), len(started_runs(two))) == counts
            assert started_runs(restarted) == []
            puppemon("resume", "tick", cwd=repo)
            wait_until(lambda: started_runs(restarted) and len(started_runs(two)) > counts[1], 15,
                       "both daemons running tick again", lambda: restarted.log + two.log)
            assert restarted.stop() == 0
        assert two.stop() == 0
    fsck(bare_remote)


def process_state(pid: int) -> str:
    """The state letter of /proc/<pid>/stat: R, S, T (stopped), ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_paused_run_is_frozen_and_its_timeout_does_not_count_the_pause(tmp_path, bare_remote):
    pidfile = tmp_path / "pid"
    manifest = (f'version: 1\nflows:\n  slow:\n    command: ["sh", "-c", "echo $$ > {pidfile}; sleep 2; echo done"]\n'
                "    run_on_deploy: true\n    timeout: 3s\n")
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as d:
        found = wait_until(lambda: re.search(r"slow: started run (\S+)", d.log), 20, "the run", lambda: d.log)
        run_id = found.group(1)
        pid = int(wait_until(lambda: pidfile.exists() and pidfile.read_text().strip(), 5, "its pid"))
        paused = json.loads(puppemon("pause", "--run", run_id, "--json", cwd=repo).stdout)
        assert paused["action"] == "pause" and paused["run_id"] == run_id
        wait_until(lambda: f"run {run_id} paused" in d.log, 10, "the daemon pausing it", lambda: d.log)
        wait_until(lambda: process_state(pid) == "T", 5, "its process stopped (the run's thread applies it)")
        wait_until(lambda: f"running: slow {run_id} since " in puppemon("status", "--fetch", cwd=repo).stdout
                   and "(paused)" in puppemon("status", "--fetch", cwd=repo).stdout, 10, "status saying so")
        frozen = time.monotonic()
        while time.monotonic() - frozen < 3:   # paused for 3s: past the timeout, had it kept counting
            assert process_state(pid) == "T"
            time.sleep(0.2)
        unknown = puppemon("resume", "--run", "2000", cwd=repo, check=False)
        assert (unknown.returncode, unknown.stderr) == (1, "Error: no run with id '2000'; list runs with `puppemon runs`\n")
        puppemon("resume", "--run", run_id[:-3], cwd=repo)   # a unique prefix, found in the status refs
        wait_until(lambda: re.search(r"slow: \w+ in", d.log), 15, "the run's end", lambda: d.log)
        assert d.stop() == 0
    (run,) = of_flow(remote_records(bare_remote), "slow")
    assert run["status"] == "succeeded" and run["duration"] >= 5, run
    log = git("--git-dir", str(bare_remote), "show",
              f"runs:runs/slow/{run_id[:4]}/{run_id[4:6]}/{run_id[6:8]}/{run_id}/log.txt")
    said = re.fullmatch(r"puppemon: paused \(its timeout does not count while paused\)\n"
                        r"puppemon: resumed after ([0-9]+\.[0-9])s paused\ndone\n", log)
    assert said and float(said.group(1)) >= 3, log   # paused 3 s at least (longer on a busy machine)
    done = [json.loads(git("--git-dir", str(bare_remote), "show", f"runs:{p}"))
            for p in git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs", "requests").split()
            if p.endswith(".done.json")]
    assert sorted(d["outcome"] for d in done) == ["paused", "resumed"]


def test_a_run_paused_longer_than_max_pause_is_cancelled(tmp_path, bare_remote):
    manifest = 'version: 1\nflows:\n  slow:\n    command: ["sleep", "30"]\n    run_on_deploy: true\n'
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    clock = Clock(datetime.now(timezone.utc))
    with running(bare_remote, tmp_path / "state", clock, max_pause=1.0) as daemon:
        daemon.cycle()
        wait_until(lambda: in_flight(daemon) == ["slow"], 10, "the run")
        (active,) = daemon.queue.in_flight()
        puppemon("pause", "--run", active.run_id, cwd=repo)
        daemon.cycle()
        assert active.pause.wanted
        idle(daemon)
    (run,) = of_flow(remote_records(bare_remote), "slow")
    assert run["status"] == "cancelled" and run["error"] == "cancelled: paused for longer than 1.0s (max_pause)"
    assert 1 <= run["duration"] < 10


def test_status_shows_paused_flows_and_why(tmp_path, bare_remote):
    from tests.test_status import write_status

    repo = manifest_project(tmp_path, str(bare_remote), HOURLY)
    deploy(repo)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    write_status(bare_remote, "box", flows_commit=tip, flows={"tick": {"next": "2026-11-25T09:00:00.000Z"},
                                                             "other": {"next": None}})
    puppemon("pause", "tick", "--reason", "disk full", cwd=repo)
    out = puppemon("status", cwd=repo).stdout.splitlines()
    assert [line.split() for line in out if line.startswith("  tick") or line.startswith("  other")] == [
        ["other", "-", "-"], ["tick", "paused", "-"]]
    assert re.fullmatch(r"tick: paused \(disk full\) by \S+@\S+ since \S+ \S+ UTC", out[-1]), out
    data = json.loads(puppemon("status", "--json", cwd=repo).stdout)
    assert data["paused"] == {"tick": control(bare_remote, "tick")}


def test_a_state_change_replayed_onto_a_moved_remote_is_kept_and_a_concurrent_one_collides(tmp_path, bare_remote):
    """Overwriting control/flows/<flow>.json replays onto records others pushed meanwhile; only a change
    to the same file since its parent collides (first pushed wins)."""
    from puppemon.history.recorder import Recorder

    a, b = (Store.open_or_init_bare(tmp_path / name) for name in ("a.git", "b.git"))
    first, second = (Recorder(s, remote=str(bare_remote)) for s in (a, b))
    first.add({"control/flows/tick.json": b"1\n"}, "pause tick")
    assert first.sync()
    assert second.sync(push=False)                              # b has state 1
    first.add({"requests/2026/11/25/x.json": b"{}\n"}, "request x")   # someone else moves the remote
    assert first.sync()
    second.add({"control/flows/tick.json": b"2\n"}, "resume tick")
    assert second.sync() and second.dropped == []
    assert git("--git-dir", str(bare_remote), "show", "runs:control/flows/tick.json") == "2\n"
    first.add({"control/flows/tick.json": b"3\n"}, "pause tick again")   # made on state 1: b changed it since
    assert first.sync()
    assert [m.splitlines()[0] for m in first.dropped] == ["pause tick again"]
    assert git("--git-dir", str(bare_remote), "show", "runs:control/flows/tick.json") == "2\n"
