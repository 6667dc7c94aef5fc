"""The run backend seam, on the `local` backend: start, output, stop, pause/resume, crash recovery."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from puppemon.errors import PuppemonError
from puppemon.project.manifest import parse
from puppemon.run import backends
from puppemon.run.backend import Launch, StartFailed
from puppemon.run.local import LocalBackend
from puppemon.run.processes import process_start_time
from tests.conftest import wait_until
from tests.daemon_helpers import deploy, live_group_members, manifest_project, remote_records

FLOW = parse("version: 1\nflows:\n  f:\n    command: x\n").flows["f"]


def launch(tmp_path: Path, *argv: str, grace: float = 5.0) -> Launch:
    return Launch("20261125T080000Z-abcdef", 1, list(argv), tmp_path, dict(os.environ), FLOW, grace)


def run_to_end(execution, out: list[bytes], timeout: float = 10) -> int:
    code = wait_until(lambda: (rc := execution.wait(0.05)) is not None and (rc,), timeout, "the attempt to end")
    execution.close()
    return code[0]


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().rsplit(")", 1)[1].split()[0]


def all_stopped(members: list[int]) -> bool:
    """Whether every member is stopped: `T`, or `D` waiting in vfork for a child that is itself stopped
    (dash starts commands with vfork; a SIGSTOP that lands before the child's exec leaves the parent so)."""
    states = {pid: state_of(pid) for pid in members}
    parents = {}
    for pid in members:
        with open(f"/proc/{pid}/stat") as fh:
            parents[pid] = int(fh.read().rsplit(")", 1)[1].split()[1])
    stopped_parents = {parents[pid] for pid, state in states.items() if state == "T"}
    return all(state == "T" or (state == "D" and pid in stopped_parents) for pid, state in states.items())


def test_registry_names_the_backends():
    assert isinstance(backends.get("local"), LocalBackend)
    with pytest.raises(PuppemonError) as info:
        backends.get("kubernetes")
    assert str(info.value) == "no run backend 'kubernetes' (known: container, local, slurm)"


def test_output_and_exit_status_come_back(tmp_path):
    out: list[bytes] = []
    execution = LocalBackend().start(launch(tmp_path, "sh", "-c", "echo one; echo two >&2; exit 3"), out.append)
    assert execution.handle() == {"pid": execution.pid, "pid_start": process_start_time(execution.pid),
                                  "run_id": "20261125T080000Z-abcdef"}
    assert run_to_end(execution, out) == 3
    assert b"".join(out) == b"one\ntwo\n"
    assert not execution.running


def test_a_program_that_does_not_exist_fails_to_start(tmp_path):
    with pytest.raises(StartFailed) as info:
        LocalBackend().start(launch(tmp_path, "no-such-program-here"), lambda _: None)
    assert (info.value.exit_code, info.value.error) == (127, "command not found: no-such-program-here")


def test_stop_asks_then_forces_after_the_grace(tmp_path):
    out: list[bytes] = []
    script = "trap '' TERM; echo ready; while :; do sleep 0.05; done"
    execution = LocalBackend().start(launch(tmp_path, "sh", "-c", script, grace=0.3), out.append)
    wait_until(lambda: execution.wait(0.05) is None and b"ready" in b"".join(out), 10, "the flow to be ready")
    execution.stop()
    assert run_to_end(execution, out) == -signal.SIGKILL      # SIGTERM was ignored: killed after the grace
    assert live_group_members(execution.pid) == []


def test_pause_freezes_the_whole_group_and_resume_lets_it_go_on(tmp_path):
    out: list[bytes] = []
    ticks = tmp_path / "ticks"
    script = f"sleep 300 & while :; do echo x >> {ticks}; sleep 0.05; done"
    execution = LocalBackend().start(launch(tmp_path, "sh", "-c", script), out.append)
    try:
        wait_until(lambda: ticks.exists() and execution.wait(0.01) is None, 10, "the flow to tick")
        execution.pause()
        members = wait_until(lambda: (m := live_group_members(execution.pid)) and all_stopped(m) and m, 10,
                             "every member stopped")
        assert len(members) >= 2                               # the shell and its background sleep
        frozen = ticks.read_text()
        execution.wait(0.3)
        assert ticks.read_text() == frozen                     # nothing ran while paused
        execution.resume()
        wait_until(lambda: ticks.read_text() != frozen, 10, "ticking again after resume")
        execution.pause()
        wait_until(lambda: all_stopped(live_group_members(execution.pid)), 10, "paused again")
        execution.stop()                                       # a paused group is woken to see the SIGTERM
        assert run_to_end(execution, out) == -signal.SIGTERM
    finally:
        execution.kill()
        execution.close()


def test_recover_kills_only_the_group_it_recorded(tmp_path):
    proc = subprocess.Popen(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    try:
        handle = {"pid": proc.pid, "pid_start": process_start_time(proc.pid)}
        backend = LocalBackend()
        assert backend.recover({**handle, "pid_start": "1"}) is None   # a reused pid: not ours, left alone
        assert backend.recover({}) is None
        assert proc.poll() is None
        assert backend.recover(handle) == f"its leftover processes (group {proc.pid}) were killed"
        assert proc.wait(10) == -signal.SIGKILL
        wait_until(lambda: live_group_members(proc.pid) == [], 10, "the group to be gone")
        assert backend.recover(handle) is None                         # gone: nothing to do
    finally:
        if proc.poll() is None:
            proc.kill()


def test_a_journal_written_before_backends_existed_is_still_recovered(tmp_path, bare_remote):
    """Upgrading while a run was in flight: the old journal entry (pid at its top level) is honoured."""
    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import Settings

    deploy(manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  long:\n    command: x\n"))
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        state = tmp_path / "state"
        (state / "journal").mkdir(parents=True)
        entry = {"run_id": "20261125T080000Z-0a1b2c", "flow": "long", "trigger": {"kind": "schedule"},
                 "scheduled": "2026-11-25T08:00:00.000Z", "started": "2026-11-25T08:00:00.120Z", "params": {},
                 "flows_commit": "", "source_commit": "", "request": None,
                 "pid": proc.pid, "pid_start": process_start_time(proc.pid)}
        (state / "journal" / f"{entry['run_id']}.json").write_text(json.dumps(entry))
        daemon = Daemon(Settings(remote=str(bare_remote), state=state, name="d1"))
        daemon.open()
        daemon.close()
        assert proc.wait(10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
    (record,) = remote_records(bare_remote)
    assert (record["id"], record["status"], record["started"]) == (entry["run_id"], "crashed", entry["started"])
    assert record["error"] == (f"the daemon stopped while this run was in flight; its leftover processes "
                               f"(group {proc.pid}) were killed")
    assert not list((state / "journal").iterdir())
