"""Several daemons on one remote: failover when one stops heartbeating, one live daemon per --name, and
the remote's layout version (control/format.json). Real daemon processes on one bare remote.

The daemons heartbeat every second (PUPPEMON_HEARTBEAT=1), so a daemon is gone after 5 s
(history/status.py gone_after: five heartbeats, or three polls) instead of 5 minutes.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path

from puppemon.formats import utc_iso
from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, linear, manifest_project, remote_records,
                                  run_daemon_once, wait_until)
from tests.test_status import write_status

BEAT = {"PUPPEMON_HEARTBEAT": "1"}
BOUND = 5.0   # gone after this many seconds without a heartbeat, with BEAT and --poll 0.3
MANIFEST = """\
version: 1
flows:
  slow:
    command: "echo $$ >> {pids}; echo started; exec sleep {seconds}"
  hello:
    command: echo hello
"""


def project(tmp_path: Path, bare: Path, seconds: int = 60) -> tuple[Path, Path]:
    pids = tmp_path / "pids"
    repo = manifest_project(tmp_path, str(bare), MANIFEST.format(pids=pids, seconds=seconds))
    deploy(repo)
    return repo, pids


def trigger(repo: Path, flow: str = "slow") -> str:
    return puppemon("trigger", flow, cwd=repo).stdout.strip()


def status_of(bare: Path, name: str) -> dict | None:
    proc = subprocess.run(["git", "--git-dir", str(bare), "show", f"refs/puppemon/status/{name}:status.json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def claimed_by(bare: Path, request_id: str) -> str | None:
    day = f"{request_id[:4]}/{request_id[4:6]}/{request_id[6:8]}"
    proc = subprocess.run(["git", "--git-dir", str(bare), "show", f"runs:requests/{day}/{request_id}.claim.json"],
                          capture_output=True, text=True)
    return json.loads(proc.stdout)["daemon"] if proc.returncode == 0 else None


def record_commits(bare: Path, record: dict) -> int:
    """How many commits of the remote's runs wrote this run's run.json."""
    day = f"{record['id'][:4]}/{record['id'][4:6]}/{record['id'][6:8]}"
    path = f"runs/{record['flow']}/{day}/{record['id']}/run.json"
    return len(git("--git-dir", str(bare), "log", "--format=%H", "runs", "--", path).split())


def kill_runs(pids: Path) -> None:
    """Stop the runs a daemon killed -9 left behind (their process groups outlive it)."""
    for line in pids.read_text().split() if pids.exists() else []:
        try:
            os.killpg(int(line), signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def in_flight(bare: Path, name: str) -> list[str]:
    return [r["run_id"] for r in (status_of(bare, name) or {}).get("in_flight", [])]


def test_a_daemon_killed_9_has_its_runs_recorded_crashed_once_by_the_others(tmp_path, bare_remote):
    repo, pids = project(tmp_path, bare_remote)
    d1 = DaemonProcess(str(bare_remote), tmp_path / "s1", "--max-parallel", "1", name="d1", env=BEAT).start()
    others = [DaemonProcess(str(bare_remote), tmp_path / f"s{n}", name=f"d{n}", env=BEAT) for n in (2, 3)]
    try:
        running, waiting = trigger(repo), trigger(repo)  # one slot: the second is claimed, not started
        wait_until(lambda: in_flight(bare_remote, "d1") == [running] and claimed_by(bare_remote, waiting) == "d1",
                   30, "d1 running one request and holding the other", lambda: d1.log)
        for other in others:  # they join once d1 holds both: neither is theirs
            other.start()
        wait_until(lambda: all(status_of(bare_remote, o.name) for o in others), 30, "d2 and d3 heartbeating")
        d1.kill9()
        killed = time.monotonic()

        def crashed():
            found = {r["id"]: r for r in remote_records(bare_remote) if r["id"] in (running, waiting)}
            return found if len(found) == 2 else None
        records = wait_until(crashed, BOUND + 25, "both runs of d1 recorded", lambda: others[0].log + others[1].log)
        took = time.monotonic() - killed
        for record in records.values():
            assert record["status"] == "crashed" and record["daemon"] == "d1", record
            assert record["error"].startswith("daemon d1 stopped heartbeating (last heartbeat 20"), record["error"]
        assert records[waiting]["request"] == waiting and records[waiting]["trigger"]["kind"] == "request"
        assert BOUND - 1 < took < BOUND + 25, took
        # Both live daemons may have tried: the remote holds one record of each run, written once.
        for record in records.values():
            assert record_commits(bare_remote, record) == 1

        # d1 restarts after kill -9 on its state: not refused (its old pid is dead); its own recovery of
        # the run it had in flight is dropped (already recorded), and the claimed request is not run.
        again = DaemonProcess(str(bare_remote), tmp_path / "s1", name="d1", env=BEAT).start()
        wait_until(lambda: "dropped local record" in again.log and again.proc.poll() is None
                   and status_of(bare_remote, "d1")["pid"] == again.proc.pid, 30, "d1 back", lambda: again.log)
        assert again.stop() == 0, again.log
        for record in records.values():
            assert record_commits(bare_remote, record) == 1
        assert len(pids.read_text().split()) == 1  # the claimed request never ran
    finally:
        for other in others:
            if other.proc:
                other.stop()
        kill_runs(pids)
    print(f"failover: kill -9 to both runs recorded crashed in {took:.1f}s (bound {BOUND:g}s)")
    fsck(bare_remote)
    assert linear(bare_remote)


def test_a_partitioned_daemon_that_comes_back_does_not_record_its_run_again(tmp_path, bare_remote):
    repo, pids = project(tmp_path, bare_remote, seconds=2)
    d1 = DaemonProcess(str(bare_remote), tmp_path / "s1", name="d1", env=BEAT).start()
    d2 = DaemonProcess(str(bare_remote), tmp_path / "s2", name="d2", env=BEAT)
    try:
        run_id = trigger(repo)
        wait_until(lambda: in_flight(bare_remote, "d1") == [run_id], 30, "d1 running it", lambda: d1.log)
        d2.start()
        d1.proc.send_signal(signal.SIGSTOP)  # no heartbeat, no record: as if its network were cut
        wait_until(lambda: [r for r in remote_records(bare_remote) if r["id"] == run_id], BOUND + 25,
                   "d2 records it crashed", lambda: d2.log)
        d1.proc.send_signal(signal.SIGCONT)  # its run ended meanwhile: d1 records it, the remote keeps the first
        wait_until(lambda: "dropped local record" in d1.log, 30, "d1's record dropped", lambda: d1.log)
        [record] = [r for r in remote_records(bare_remote) if r["id"] == run_id]
        assert record["status"] == "crashed" and "daemon d1 stopped heartbeating" in record["error"]
        assert record_commits(bare_remote, record) == 1
        assert d1.stop() == 0 and d2.stop() == 0
    finally:
        for d in (d1, d2):
            if d.proc and d.proc.poll() is None:
                d.proc.send_signal(signal.SIGCONT)
                d.stop()
        kill_runs(pids)
    fsck(bare_remote)
    assert linear(bare_remote)


def test_one_live_daemon_per_name(tmp_path, bare_remote):
    repo, _pids = project(tmp_path, bare_remote)
    with DaemonProcess(str(bare_remote), tmp_path / "s1", name="d1", env=BEAT) as d1:
        wait_until(lambda: status_of(bare_remote, "d1"), 30, "d1 heartbeating", lambda: d1.log)
        proc = run_daemon_once(str(bare_remote), tmp_path / "other", name="d1")
        assert proc.returncode == 1
        [line] = proc.stderr.strip().splitlines()
        assert f"a daemon named 'd1' is running (pid {d1.proc.pid} here" in line and "--name" in line, line
        assert "Traceback" not in proc.stderr
    # Another host's, heartbeating: refused, naming it.
    now = utc_iso(datetime.now(timezone.utc))
    write_status(bare_remote, "d9", host="elsewhere", pid=77, heartbeat=now, poll=0.3, heartbeat_every=10)
    proc = run_daemon_once(str(bare_remote), tmp_path / "d9a", name="d9")
    assert proc.returncode == 1 and "(host elsewhere, pid 77, last heartbeat" in proc.stderr, proc.stderr
    # A throwaway job after one that stopped, and a daemon whose last heartbeat is past the bound: not refused.
    write_status(bare_remote, "d9", host="elsewhere", pid=77, heartbeat=now, state="stopped", once=True)
    assert run_daemon_once(str(bare_remote), tmp_path / "d9b", name="d9").returncode == 0
    assert run_daemon_once(str(bare_remote), tmp_path / "d9c", name="d9").returncode == 0  # and again
    write_status(bare_remote, "d8", host="elsewhere", pid=77, heartbeat="2020-01-01T00:00:00.000Z")
    assert run_daemon_once(str(bare_remote), tmp_path / "d8", name="d8").returncode == 0


def test_a_layout_this_version_does_not_know_stops_every_writer(tmp_path, bare_remote):
    repo, _pids = project(tmp_path, bare_remote)
    assert run_daemon_once(str(bare_remote), tmp_path / "s1", name="d1").returncode == 0
    tree = git("--git-dir", str(bare_remote), "show", "runs:control/format.json")
    assert json.loads(tree) == {"schema": 1, "layout": 1, "requires": "0.1.0"}
    with DaemonProcess(str(bare_remote), tmp_path / "s2", name="d2", env=BEAT) as running:
        wait_until(lambda: status_of(bare_remote, "d2"), 30, "d2 heartbeating", lambda: running.log)
        for attempt in range(20):   # the running daemon may push to runs meanwhile: try again on top of it
            clone = tmp_path / f"newer{attempt}"
            # --no-local: through the pack protocol, not a copy of the objects the daemon is pushing into
            git("clone", "--quiet", "--no-local", "--branch", "runs", str(bare_remote), str(clone))
            (clone / "control" / "format.json").write_text('{"schema": 1, "layout": 2, "requires": "9.9"}\n')
            git("commit", "--quiet", "-am", "layout 2", cwd=clone)
            if subprocess.run(["git", "push", "--quiet", "origin", "runs"], cwd=clone, capture_output=True).returncode == 0:
                break
        else:
            raise AssertionError("could not push layout 2 past the running daemon")
        tip = git("--git-dir", str(bare_remote), "rev-parse", "runs").strip()
        assert running.proc.wait(30) == 1  # the running daemon stops by itself
        running.log_fh.close()
        assert "is in layout 2 (control/format.json)" in running.log and "upgrade to puppemon 9.9" in running.log
    wanted = "runs on origin is in layout 2 (control/format.json), newer than puppemon"
    for args in (("trigger", "hello"), ("pause", "hello"), ("prune", "--before", "1d")):
        proc = puppemon(*args, cwd=repo, check=False)
        assert proc.returncode == 1 and "upgrade to puppemon 9.9 or later" in proc.stderr, (args, proc.stderr)
        assert wanted in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "request: run hello" not in git("log", "--format=%s", "runs", cwd=repo)  # taken back
    proc = run_daemon_once(str(bare_remote), tmp_path / "s3", name="d3")
    assert proc.returncode == 1 and "is in layout 2" in proc.stderr, proc.stderr
    assert git("--git-dir", str(bare_remote), "rev-parse", "runs").strip() == tip  # nothing was written
    fsck(bare_remote)
    assert linear(bare_remote)
