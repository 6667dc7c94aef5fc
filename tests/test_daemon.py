"""The daemon as users run it: a real process, a real remote, real clocks with short intervals."""
from __future__ import annotations

import json
import shutil
import signal
import time

import pytest

from tests.conftest import git
from tests.daemon_helpers import (DaemonProcess, deploy, deploy_records, fsck, linear, live_group_members,
                                  manifest_project, of_flow, remote_records, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

TICK = """\
version: 1
flows:
  tick:
    command: ["sh", "-c", "echo tick $(cat version.txt)"]
    every: 1s
"""


def test_scheduled_runs_reach_the_remote_and_redeploy_changes_code(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TICK, {"version.txt": "v1"})
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        wait_until(lambda: len(of_flow(remote_records(bare_remote), "tick", status="succeeded")) >= 2,
                   what="two scheduled runs", on_fail=lambda: daemon.log)
        first = of_flow(remote_records(bare_remote), "tick")[0]
        log = git("--git-dir", str(bare_remote), "show",
                  f"runs:runs/tick/{first['id'][:4]}/{first['id'][4:6]}/{first['id'][6:8]}/{first['id']}/log.txt")
        assert log == "tick v1\n"
        assert first["trigger"] == {"kind": "schedule"} and first["scheduled"] <= first["started"]
        deploy(repo, files={"version.txt": "v2"})
        new_tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        wait_until(lambda: of_flow(remote_records(bare_remote), "tick", flows_commit=new_tip),
                   what="a run of the new deploy", on_fail=lambda: daemon.log)
        assert daemon.stop() == 0
    deploys = deploy_records(bare_remote)
    assert sorted(d["status"] for d in deploys) == ["deployed", "deployed"]
    fsck(bare_remote)
    assert linear(bare_remote)


def test_kill_9_mid_run_is_recorded_crashed_and_leaves_no_orphan(tmp_path, bare_remote):
    manifest = """\
version: 1
flows:
  long:
    command: ["sh", "-c", "sleep 300 & echo $! > $TMPDIR/../child.pid; echo started; wait"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    state = tmp_path / "state"
    daemon = DaemonProcess(str(bare_remote), state).start()
    journal = state / "journal"
    entry = wait_until(lambda: [p for p in journal.glob("*.json") if '"handle": null' not in p.read_text()],
                       what="the run's journal entry with its process group", on_fail=lambda: daemon.log)
    info = json.loads(entry[0].read_text())
    assert info["backend"] == "local"
    pgid = info["handle"]["pid"]
    wait_until(lambda: len(live_group_members(pgid)) == 2, what="the run's shell and its sleep")
    daemon.kill9()
    assert len(live_group_members(pgid)) == 2  # the group outlives the daemon: nothing cleaned it up yet
    result = run_daemon_once(str(bare_remote), state)
    assert result.returncode == 0, result.stderr
    assert live_group_members(pgid) == []
    crashed = of_flow(remote_records(bare_remote), "long", status="crashed")
    assert [r["id"] for r in crashed] == [info["run_id"]]
    assert crashed[0]["error"] == (f"the daemon stopped while this run was in flight; its leftover "
                                   f"processes (group {pgid}) were killed")
    # at WARNING with its reason, as `journalctl -p warning` would show it
    assert (f" WARNING long: run {info['run_id']} recorded as crashed: {crashed[0]['error']}\n"
            in result.stderr), result.stderr
    assert not list(journal.glob("*.json"))
    # a second start records nothing more
    assert run_daemon_once(str(bare_remote), state).returncode == 0
    assert len(of_flow(remote_records(bare_remote), "long", status="crashed")) == 1


def test_remote_unavailable_for_a_while_every_record_arrives(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TICK, {"version.txt": "v1"})
    deploy(repo)
    state = tmp_path / "state"
    with DaemonProcess(str(bare_remote), state) as daemon:
        wait_until(lambda: of_flow(remote_records(bare_remote), "tick"), what="a first run",
                   on_fail=lambda: daemon.log)
        hidden = tmp_path / "away.git"
        shutil.move(bare_remote, hidden)
        wait_until(lambda: "records kept locally" in daemon.log, what="the daemon noticing",
                   on_fail=lambda: daemon.log)
        local = lambda: int(git("--git-dir", str(state / "mirror.git"), "rev-list", "--count", "runs"))  # noqa: E731
        queued_at = local()
        wait_until(lambda: local() >= queued_at + 2, what="records queued while away", on_fail=lambda: daemon.log)
        shutil.move(hidden, bare_remote)
        assert daemon.stop() == 0
    local_ids = git("--git-dir", str(state / "mirror.git"), "log", "--format=%(trailers:key=Puppemon-Run,valueonly)",
                    "runs").split()
    remote_ids = git("--git-dir", str(bare_remote), "log", "--format=%(trailers:key=Puppemon-Run,valueonly)",
                     "runs").split()
    assert len(local_ids) >= 3 and set(local_ids) == set(remote_ids)
    fsck(bare_remote)


def test_two_daemons_on_one_remote_union_linear(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TICK, {"version.txt": "v1"})
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "s1", name="alpha") as a, \
            DaemonProcess(str(bare_remote), tmp_path / "s2", name="beta") as b:
        def both() -> bool:
            records = remote_records(bare_remote)
            return (len([r for r in records if r["daemon"] == "alpha"]) >= 3
                    and len([r for r in records if r["daemon"] == "beta"]) >= 3)
        wait_until(both, timeout=40, what="runs from both daemons", on_fail=lambda: a.log + b.log)
        assert a.stop() == 0 and b.stop() == 0
    for state in ("s1", "s2"):
        ids = git("--git-dir", str(tmp_path / state / "mirror.git"), "log",
                  "--format=%(trailers:key=Puppemon-Run,valueonly)", "runs").split()
        remote_ids = set(git("--git-dir", str(bare_remote), "log",
                             "--format=%(trailers:key=Puppemon-Run,valueonly)", "runs").split())
        assert set(ids) <= remote_ids
    assert linear(bare_remote)
    fsck(bare_remote)
    deploys = sorted(p.rsplit("/", 1)[1] for p in git("--git-dir", str(bare_remote), "ls-tree", "-r",
                                                       "--name-only", "runs", "deploys/").split())
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    assert deploys == [f"{tip}-alpha.json", f"{tip}-beta.json"]  # each daemon's deploy record is kept
    statuses = git("--git-dir", str(bare_remote), "for-each-ref", "--format=%(refname)", "refs/puppemon/status")
    assert statuses.split() == ["refs/puppemon/status/alpha", "refs/puppemon/status/beta"]


def test_sigterm_lets_runs_finish_within_grace_and_exits_0(tmp_path, bare_remote):
    manifest = """\
version: 1
flows:
  short:
    command: ["sh", "-c", "echo begin; sleep 1; echo end"]
    run_on_deploy: true
  long:
    command: ["sh", "-c", "echo begin; sleep 300"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    daemon = DaemonProcess(str(bare_remote), tmp_path / "state", "--grace", "2").start()
    wait_until(lambda: daemon.log.count("started run") == 2, what="both runs started", on_fail=lambda: daemon.log)
    begun = time.monotonic()
    assert daemon.stop(timeout=30) == 0
    assert time.monotonic() - begun < 2 + 5 + 3  # grace + the runner's kill grace + publishing
    records = {r["flow"]: r for r in remote_records(bare_remote)}
    assert records["short"]["status"] == "succeeded"
    assert records["long"]["status"] == "cancelled"


def test_once_exit_codes(tmp_path, bare_remote):
    manifest = """\
version: 1
flows:
  hello:
    command: ["echo", "hi"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    # no flows branch yet: nothing to do, still a success
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    deploy(repo)
    result = run_daemon_once(str(bare_remote), tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in remote_records(bare_remote)] == ["succeeded"]
    # the same deploy again: no new run_on_deploy run, nothing to record
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    assert len(remote_records(bare_remote)) == 1
    # an unreachable remote: records cannot be published -> exit 1
    unreachable = run_daemon_once(str(tmp_path / "missing.git"), tmp_path / "state2")
    assert unreachable.returncode == 1
    assert "cannot fetch from" in unreachable.stderr


def test_daemon_over_ssh(tmp_path, ssh_remote):
    bare_remote = ssh_remote.bare
    url = ssh_remote.url_for(bare_remote)
    manifest = """\
version: 1
flows:
  hello:
    command: ["echo", "over ssh"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, url, manifest)
    deploy(repo)
    result = run_daemon_once(url, tmp_path / "state")
    assert result.returncode == 0, result.stderr
    assert [r["status"] for r in remote_records(bare_remote)] == ["succeeded"]
    fsck(bare_remote)


def test_second_daemon_on_same_state_dir_is_refused(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TICK, {"version.txt": "v"})
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        wait_until(lambda: "started" in daemon.log, what="the first daemon", on_fail=lambda: daemon.log)
        second = run_daemon_once(str(bare_remote), tmp_path / "state")
        assert second.returncode == 1
        assert second.stderr == (f"Error: another puppemon daemon (pid {daemon.proc.pid}) is using "
                                 f"{tmp_path / 'state'}; stop it or pass a different --state\n")
        daemon.stop()


def test_deploy_checkout_is_read_only_and_runs_get_their_own_copy(tmp_path, bare_remote):
    manifest = """\
version: 1
flows:
  edit:
    command: ["sh", "-c", "echo more >> data.txt && cat data.txt && touch new-file"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest, {"data.txt": "start\n"})
    deploy(repo)
    state = tmp_path / "state"
    assert run_daemon_once(str(bare_remote), state).returncode == 0
    assert run_daemon_once(str(bare_remote), state).returncode == 0  # same deploy: no new run
    (checkout,) = (state / "deploys").iterdir()
    modes = {p.name: p.stat().st_mode & 0o222 for p in [checkout, *checkout.rglob("*")]}
    assert modes and set(modes.values()) == {0}
    assert (checkout / "data.txt").read_text() == "start\n" and not (checkout / "new-file").exists()
    (record,) = remote_records(bare_remote)
    assert record["status"] == "succeeded"
    log = git("--git-dir", str(bare_remote), "show", f"runs:runs/edit/{record['id'][:4]}/{record['id'][4:6]}/"
              f"{record['id'][6:8]}/{record['id']}/log.txt")
    assert log == "start\nmore\n"


def test_sighup_fetches_now(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), TICK, {"version.txt": "v1"})
    deploy(repo)
    # the last --poll wins: an hour, so only the signal can make it fetch in time
    daemon = DaemonProcess(str(bare_remote), tmp_path / "state", "--poll", "3600").start()
    try:
        wait_until(lambda: "resumed deploy" in daemon.log or "deployed" in daemon.log, what="the first deploy",
                   on_fail=lambda: daemon.log)
        deploy(repo, files={"version.txt": "v2"})
        new_tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        daemon.proc.send_signal(signal.SIGHUP)
        wait_until(lambda: f"deployed {new_tip[:7]}" in daemon.log, timeout=15, what="a deploy after SIGHUP",
                   on_fail=lambda: daemon.log)
    finally:
        assert daemon.stop() == 0


def test_second_sigterm_kills_runs_at_once_and_records_them(tmp_path, bare_remote):
    manifest = """\
version: 1
flows:
  stubborn:
    command: ["sh", "-c", "trap '' TERM; echo begin; while :; do sleep 0.1; done"]
    run_on_deploy: true
"""
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    daemon = DaemonProcess(str(bare_remote), tmp_path / "state", "--grace", "60").start()
    wait_until(lambda: "started run" in daemon.log, what="the run started", on_fail=lambda: daemon.log)
    begun = time.monotonic()
    daemon.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: "waiting up to 60s" in daemon.log, what="the graceful stop", on_fail=lambda: daemon.log)
    assert daemon.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - begun < 10  # neither the 60 s grace nor the runner's own kill grace
    (record,) = of_flow(remote_records(bare_remote), "stubborn")
    assert record["status"] == "cancelled"
