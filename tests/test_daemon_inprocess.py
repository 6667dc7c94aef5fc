"""The daemon built in-process with a clock of the test's own, driven one cycle and one fire at a time.

Real git remotes and real run processes; only time is the test's: fire times are
handed over with `daemon.fire(flow, when)` (what APScheduler calls), and catch-up
sees exactly the gap the test makes, so nothing here waits for a wall clock.
"""
from __future__ import annotations

import logging
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from puppemon.daemon.loop import Daemon
from puppemon.daemon.settings import Settings
from tests.conftest import git, wait_until
from tests.daemon_helpers import (deploy, deploy_records, fsck, linear, manifest_project, of_flow, remote_records,
                                  result_of)

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=timezone.utc)


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: datetime = T0) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@contextmanager
def running(remote: Path, state: Path, clock: Clock, **settings):
    """A Daemon over `remote`, opened (state locked, crashes recovered) and closed (runs recorded, published)."""
    with Daemon(Settings(remote=str(remote), state=state, name="d1", grace=5, **settings), clock=clock) as daemon:
        yield daemon


def blocking(release: Path, then: str = "true") -> str:
    """A command that waits until the test creates `release`, then runs `then`."""
    return f'["sh", "-c", "while [ ! -e {release} ]; do sleep 0.02; done; {then}"]'


def in_flight(daemon: Daemon) -> list[str]:
    return sorted(a.flow for a in daemon.queue.in_flight())


def idle(daemon: Daemon) -> None:
    assert daemon.queue.wait_idle(30), "runs still going after 30s"
    daemon.publish()


@pytest.mark.parametrize("policy, expected", [("none", 0), ("latest", 1), ("all", 3)])
def test_catchup_after_a_stopped_period(tmp_path, bare_remote, caplog, policy, expected):
    manifest = f"version: 1\nflows:\n  tick:\n    command: [\"true\"]\n    every: 1s\n    overlap: queue\n" \
               f"    catchup: {policy}\n"
    deploy(manifest_project(tmp_path, str(bare_remote), manifest))
    clock, state = Clock(), tmp_path / "state"
    with running(bare_remote, state, clock) as daemon:
        daemon.cycle(catch_up=True)             # deploys; the flow's baseline is now
        assert daemon.deployer.current is not None and not daemon.queue.busy()
    clock.advance(3.5)                          # down across three fire times: T0+1s, +2s, +3s
    caplog.set_level(logging.INFO, "puppemon")
    with running(bare_remote, state, clock) as daemon:
        daemon.cycle(catch_up=True)
        idle(daemon)
    caught = of_flow(remote_records(bare_remote), "tick", trigger={"kind": "catchup"})
    scheduled = [r["scheduled"] for r in caught]
    assert scheduled == ["2026-11-25T08:00:01.000Z", "2026-11-25T08:00:02.000Z",
                         "2026-11-25T08:00:03.000Z"][3 - expected:]
    if expected:
        assert f"tick: catching up {expected} missed run{'s' if expected > 1 else ''} (catchup: {policy})" in \
            caplog.text


@pytest.mark.parametrize("policy", ["skip", "queue", "parallel"])
def test_overlap_policies(tmp_path, bare_remote, policy):
    release = tmp_path / "release"
    manifest = f"version: 1\nflows:\n  slow:\n    command: {blocking(release)}\n    every: 1h\n" \
               f"    overlap: {policy}\n"
    deploy(manifest_project(tmp_path, str(bare_remote), manifest))
    clock = Clock()
    with running(bare_remote, tmp_path / "state", clock) as daemon:
        daemon.cycle()
        daemon.fire("slow", T0 + timedelta(hours=1))
        wait_until(lambda: in_flight(daemon) == ["slow"], 10, "the first run")
        daemon.fire("slow", T0 + timedelta(hours=2))   # the first one is still going
        if policy == "parallel":
            wait_until(lambda: in_flight(daemon) == ["slow", "slow"], 10, "the second run beside the first")
        else:
            assert in_flight(daemon) == ["slow"]
        release.touch()
        idle(daemon)
    records = of_flow(remote_records(bare_remote), "slow")
    assert [r["scheduled"] for r in records] == ["2026-11-25T09:00:00.000Z", "2026-11-25T10:00:00.000Z"]
    statuses = [r["status"] for r in records]
    first, second = records
    if policy == "skip":
        assert statuses == ["succeeded", "skipped"]
        assert second["error"] == "the previous run was still going (overlap: skip)"
    elif policy == "queue":
        assert statuses == ["succeeded", "succeeded"] and second["started"] >= first["finished"]
    else:
        assert statuses == ["succeeded", "succeeded"] and second["started"] < first["finished"]


def test_max_parallel_bounds_runs_across_flows(tmp_path, bare_remote):
    release = tmp_path / "release"
    flows = "".join(f"  f{i}:\n    command: {blocking(release)}\n    run_on_deploy: true\n" for i in range(3))
    deploy(manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n" + flows))
    with running(bare_remote, tmp_path / "state", Clock(), max_parallel=1) as daemon:
        daemon.cycle()
        wait_until(lambda: len(in_flight(daemon)) == 1, 10, "the first run")
        assert len(daemon.queue.pending) == 2
        release.touch()
        idle(daemon)
    spans = sorted((r["started"], r["finished"]) for r in remote_records(bare_remote))
    assert len(spans) == 3
    assert all(b[0] >= a[1] for a, b in zip(spans, spans[1:])), spans


def test_a_queued_run_keeps_the_deploy_it_was_scheduled_on(tmp_path, bare_remote):
    """A run waiting for a slot when a redeploy removes its flow still runs, with its own code."""
    release = tmp_path / "release"
    manifest = f"version: 1\nflows:\n  blocker:\n    command: {blocking(release)}\n    run_on_deploy: true\n" \
               "  waiting:\n    command: [\"cat\", \"version.txt\"]\n    run_on_deploy: true\n"
    repo = manifest_project(tmp_path, str(bare_remote), manifest, {"version.txt": "old code\n"})
    deploy(repo)
    first = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    with running(bare_remote, tmp_path / "state", Clock(), max_parallel=1) as daemon:
        daemon.cycle()
        wait_until(lambda: in_flight(daemon) == ["blocker"], 10, "the blocker")
        deploy(repo, manifest='version: 1\nflows:\n  other:\n    command: ["true"]\n',
               files={"version.txt": "new code\n"})
        second = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        daemon.cycle()
        assert daemon.deployer.current.sha == second
        assert (tmp_path / "state" / "deploys" / first).is_dir()   # kept: the queued run needs it
        release.touch()
        idle(daemon)
    (record,) = of_flow(remote_records(bare_remote), "waiting")
    assert record["status"] == "succeeded" and record["flows_commit"] == first
    rid = record["id"]
    log = git("--git-dir", str(bare_remote), "show", f"runs:runs/waiting/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}/log.txt")
    assert log == "old code\n"


TICK = "version: 1\nflows:\n  tick:\n    command: [\"true\"]\n    every: 1h\n"


def push_broken_manifest(tmp_path: Path, bare: Path) -> str:
    """Put an invalid manifest on the remote's flows branch, by hand (push's validation would refuse it)."""
    clone = tmp_path / "clone"
    git("clone", "--quiet", "--branch", "flows", str(bare), str(clone))
    (clone / "puppemon.yaml").write_text("version: 1\nflows:\n  tick:\n    command: x\n    every: often\n")
    git("commit", "--quiet", "-am", "broken", cwd=clone)
    git("push", "--quiet", "origin", "flows", cwd=clone)
    return git("rev-parse", "HEAD", cwd=clone).strip()


def test_bad_deploy_is_refused_recorded_once_and_the_old_one_keeps_running(tmp_path, bare_remote, caplog):
    deploy(manifest_project(tmp_path, str(bare_remote), TICK))
    good = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    with running(bare_remote, tmp_path / "state", Clock()) as daemon:
        daemon.cycle()
        bad = push_broken_manifest(tmp_path, bare_remote)
        daemon.cycle()
        daemon.cycle()                            # a second look at the same commit records nothing more
        assert daemon.deployer.current.sha == good
        daemon.fire("tick", T0 + timedelta(hours=1))
        idle(daemon)
    refused = [d for d in deploy_records(bare_remote) if d["status"] == "refused"]
    assert len(refused) == 1 and refused[0]["flows_commit"] == bad
    assert refused[0]["error"] == ("puppemon.yaml:5:12: flows.tick.every: 'often' is not a duration "
                                   "(use 30s, 10m, 2h, 1d)")
    assert f"deploy {bad[:7]} refused" in caplog.text
    (run,) = of_flow(remote_records(bare_remote), "tick")
    assert run["status"] == "succeeded" and run["flows_commit"] == good
    fsck(bare_remote)
    assert linear(bare_remote)


def test_a_restart_on_a_refused_tip_goes_on_with_the_deploy_before_it(tmp_path, bare_remote, caplog):
    caplog.set_level(logging.INFO, "puppemon")
    deploy(manifest_project(tmp_path, str(bare_remote), TICK))
    good = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    with running(bare_remote, tmp_path / "state", Clock()) as daemon:
        daemon.cycle()
    bad = push_broken_manifest(tmp_path, bare_remote)  # while no daemon runs
    with running(bare_remote, tmp_path / "state", Clock(T0 + timedelta(hours=2))) as daemon:
        daemon.cycle()
        assert daemon.deployer.current is not None and daemon.deployer.current.sha == good
        daemon.fire("tick", T0 + timedelta(hours=3))
        idle(daemon)
    assert (f"the flows tip {bad[:7]} is not ready (refused, or still building): going on with {good[:7]}, "
            "deployed before") in caplog.text
    assert [d["status"] for d in deploy_records(bare_remote)].count("deployed") == 1  # resumed, not redeployed
    runs = of_flow(remote_records(bare_remote), "tick")
    assert runs and all(r["status"] == "succeeded" and r["flows_commit"] == good for r in runs)
    fsck(bare_remote)


def test_status_and_heartbeat_follow_the_injected_clock(tmp_path, bare_remote):
    deploy(manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  tick:\n    command: [\"true\"]\n"
                                                          "    every: 1h\n"))
    clock = Clock()
    with running(bare_remote, tmp_path / "state", clock) as daemon:
        daemon.cycle()
        clock.advance(90)
        status = daemon.status()
    assert (status["started"], status["heartbeat"]) == ("2026-11-25T08:00:00.000Z", "2026-11-25T08:01:30.000Z")
    assert status["flows"] == {"tick": {"next": None}}      # --once style: no scheduler started
    assert status["in_flight"] == [] and status["state"] == "running"


def test_a_fire_after_the_stop_signal_starts_nothing(tmp_path, bare_remote):
    deploy(manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  tick:\n    command: [\"true\"]\n"
                                                          "    every: 1h\n"))
    with running(bare_remote, tmp_path / "state", Clock()) as daemon:
        daemon.cycle()
        daemon.request_stop()                     # as the first SIGTERM: the loop has not shut down yet
        daemon.fire("tick", T0 + timedelta(hours=1))
        assert not daemon.queue.busy()
    assert remote_records(bare_remote) == []


def test_each_caught_up_run_learns_which_fire_it_stands_for(tmp_path, bare_remote):
    """PUPPEMON_SCHEDULED_TIME and puppemon.trigger() tell a `catchup: all` run which missed fire it is."""
    files = {"flows/tick.py": "import os, puppemon\n\ndef main():\n"
             "    return {'env': os.environ['PUPPEMON_SCHEDULED_TIME'], 'trigger': puppemon.trigger()}\n"}
    manifest = "version: 1\nflows:\n  tick:\n    entrypoint: flows/tick.py:main\n    every: 1s\n" \
               "    overlap: queue\n    catchup: all\n"
    deploy(manifest_project(tmp_path, str(bare_remote), manifest, files))
    clock, state = Clock(), tmp_path / "state"
    with running(bare_remote, state, clock) as daemon:
        daemon.cycle(catch_up=True)
    clock.advance(2.5)
    with running(bare_remote, state, clock) as daemon:
        daemon.cycle(catch_up=True)
        idle(daemon)
    caught = of_flow(remote_records(bare_remote), "tick", trigger={"kind": "catchup"})
    assert all(r["status"] == "succeeded" for r in caught), [(r["status"], r.get("error")) for r in caught]
    results = [result_of(bare_remote, r) for r in caught]
    assert [r["env"] for r in results] == ["2026-11-25T08:00:01.000Z", "2026-11-25T08:00:02.000Z"]
    assert [r["trigger"] for r in results] == [
        {"kind": "catchup", "scheduled_time": s} for s in ("2026-11-25T08:00:01.000Z", "2026-11-25T08:00:02.000Z")]
