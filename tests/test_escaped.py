"""What a run leaves behind: processes that left its process group (setsid, a double fork) and,
after a daemon was killed, its work area in the temp directory."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, live_group_members, manifest_project, of_flow,
                                  remote_records, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

# The classic way a program becomes a daemon: fork, setsid, fork again, the middle one exits,
# stdio on /dev/null. The grandchild leaves the group and the pipe at once.
DAEMONIZE = """\
import os, sys, time
ready, written = os.pipe()
middle = os.fork()
if middle:  # wait until the grandchild runs (so what is left to find does not depend on timing)
    os.waitpid(middle, 0)
    os.read(ready, 1)
    os._exit(0)
os.setsid()
if os.fork():
    os._exit(0)
null = os.open(os.devnull, os.O_RDWR)
for fd in (0, 1, 2):
    os.dup2(null, fd)
with open(sys.argv[1], "w") as fh:
    fh.write(str(os.getpid()))
os.write(written, b"x")
time.sleep(300)
"""


def escape_with_setsid(pid_file: Path) -> str:
    """Shell that starts `sleep 300` in a session of its own and goes on once it is there (so what is
    left to find does not depend on timing), its pid in `pid_file`."""
    return (f"setsid sh -c 'echo $$ > {pid_file}; exec sleep 300' & "
            f"while [ ! -s {pid_file} ]; do sleep 0.01; done")


def escaping_flows(pids: Path) -> str:
    """A manifest whose flows leave processes running outside their process group."""
    return f"""\
version: 1
flows:
  setsid:
    command: "{escape_with_setsid(pids / 'setsid.pid')}; echo started"
    run_on_deploy: true
  daemonize:
    command: ["{sys.executable}", "daemonize.py", "{pids}/daemonize.pid"]
    run_on_deploy: true
"""


def deploy_escaping_flows(tmp_path: Path, bare_remote: Path) -> Path:
    """Push escaping_flows; the directory their escaped processes write their pids to."""
    pids = tmp_path / "pids"
    pids.mkdir()
    deploy(manifest_project(tmp_path, str(bare_remote), escaping_flows(pids), {"daemonize.py": DAEMONIZE}))
    return pids


def alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def read_pid(path: Path) -> int:
    wait_until(lambda: path.is_file() and path.read_text().strip(), timeout=10, what=f"{path.name}")
    return int(path.read_text())


def kill_leftovers(*pids: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, 9)
        except OSError:
            pass


def test_a_running_daemon_stops_and_reaps_what_a_run_left_outside_its_group(tmp_path, bare_remote):
    pids = deploy_escaping_flows(tmp_path, bare_remote)
    found: list[int] = []
    try:
        with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
            records = wait_until(lambda: (r := remote_records(bare_remote)) and len(r) == 2 and r, timeout=30,
                                 what="both runs recorded", on_fail=lambda: daemon.log)
            found = [read_pid(pids / "setsid.pid"), read_pid(pids / "daemonize.pid")]
            # gone, not even a zombie: the daemon adopted them (subreaper), killed them and reaped them
            assert [pid for pid in found if os.path.exists(f"/proc/{pid}")] == []
            assert daemon.stop() == 0
        assert {r["flow"]: (r["status"], r["escaped"]) for r in records} == {
            "setsid": ("succeeded", 1), "daemonize": ("succeeded", 1)}
        setsid = of_flow(records, "setsid")[0]
        log = git("--git-dir", str(bare_remote), "show",
                  f"runs:runs/setsid/{setsid['id'][:4]}/{setsid['id'][4:6]}/{setsid['id'][6:8]}/{setsid['id']}/log.txt")
        assert log == ("started\npuppemon: stopped 1 process this run left running outside its process group "
                       "(setsid, a double fork)\n")
        fsck(bare_remote)
    finally:
        kill_leftovers(*found)


def test_daemon_once_stops_what_its_runs_left_before_it_exits(tmp_path, bare_remote):
    pids = deploy_escaping_flows(tmp_path, bare_remote)
    found: list[int] = []
    try:
        result = run_daemon_once(str(bare_remote), tmp_path / "state")
        found = [read_pid(pids / "setsid.pid"), read_pid(pids / "daemonize.pid")]
        assert result.returncode == 0, result.stderr
        assert [pid for pid in found if alive(pid)] == []
        records = remote_records(bare_remote)
        assert sorted((r["flow"], r["escaped"]) for r in records) == [("daemonize", 1), ("setsid", 1)]
        fsck(bare_remote)
    finally:
        kill_leftovers(*found)


def test_puppemon_run_stops_what_the_flow_left_running(tmp_path):
    pids = tmp_path / "pids"
    pids.mkdir()
    repo = manifest_project(tmp_path, str(tmp_path / "none.git"), escaping_flows(pids),
                            {"daemonize.py": DAEMONIZE})
    found: list[int] = []
    try:
        for flow in ("setsid", "daemonize"):
            result = puppemon("run", flow, cwd=repo, timeout=60)
            found.append(read_pid(pids / f"{flow}.pid"))
            assert ("puppemon: stopped 1 process this run left running outside its process group"
                    in result.stdout + result.stderr)
        assert [pid for pid in found if alive(pid)] == []
    finally:
        kill_leftovers(*found)


def test_kill_9_mid_run_restart_removes_its_work_area_and_what_escaped(tmp_path, bare_remote):
    pids = tmp_path / "pids"
    pids.mkdir()
    manifest = f"""\
version: 1
flows:
  long:
    command: "{escape_with_setsid(pids / 'setsid.pid')}; echo $PUPPEMON_RUN_ID > {pids}/run; sleep 300"
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    state, tmp = tmp_path / "state", tmp_path / "tmp"
    tmp.mkdir()
    daemon = DaemonProcess(str(bare_remote), state, env={"TMPDIR": str(tmp)}).start()
    escaped = pgid = None
    try:
        run_id = wait_until(lambda: (pids / "run").is_file() and (pids / "run").read_text().strip(), timeout=30,
                            what="the run to start", on_fail=lambda: daemon.log)
        escaped = read_pid(pids / "setsid.pid")
        entry = wait_until(lambda: [p for p in (state / "journal").glob("*.json") if '"handle": null' not in
                                    p.read_text()], what="the run's journal entry", on_fail=lambda: daemon.log)
        pgid = json.loads(entry[0].read_text())["handle"]["pid"]
        areas = list(tmp.glob(f"puppemon-{run_id}-*"))
        assert len(areas) == 1 and (areas[0] / "work" / "puppemon.yaml").is_file()
        daemon.kill9()
        # the next start, with the same temp directory
        result = puppemon("daemon", "--remote", str(bare_remote), "--state", str(state), "--name", "d1", "--once",
                          check=False, env={"TMPDIR": str(tmp)}, timeout=60)
        assert result.returncode == 0, result.stderr
        assert list(tmp.glob("puppemon-*")) == []
        assert live_group_members(pgid) == [] and not alive(escaped)
        crashed = of_flow(remote_records(bare_remote), "long", status="crashed")
        assert [r["id"] for r in crashed] == [run_id]
        assert crashed[0]["error"] == (f"the daemon stopped while this run was in flight; its leftover processes "
                                       f"(group {pgid}) and 1 process it left running outside its group were killed")
        fsck(bare_remote)
    finally:
        if daemon.proc.poll() is None:
            daemon.kill9()
        if pgid:
            kill_leftovers(-pgid)
        if escaped:
            kill_leftovers(escaped)
