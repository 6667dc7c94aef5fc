"""`daemon --once` with a state directory thrown away after each start (a scheduled CI job): missed fires
count from the last fire on the runs branch, and follow each flow's `catchup` exactly.

A Daemon in-process with the test's own clock (as tests/test_daemon_inprocess.py), a fresh state
directory at every start, real git remotes and real runs.
"""
from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from puppemon.daemon.loop import Daemon
from puppemon.daemon.settings import Settings
from puppemon.formats import utc_iso
from puppemon.history.baseline import last_fires, newest_fires
from puppemon.project.manifest import parse
from tests.daemon_helpers import deploy, manifest_project, of_flow, remote_records
from tests.test_daemon_inprocess import Clock

UTC = timezone.utc
# An hour well after the flows commit is made (now): a flow that never fired counts from that commit.
H = (datetime.now(UTC) + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)


def once(remote, state, clock) -> None:
    """One `--once` start with a state directory of its own, as a CI job has."""
    settings = Settings(remote=str(remote), state=state, name="ci", grace=5, once=True, misfire_grace=120)
    with Daemon(settings, clock=clock) as daemon:
        daemon.cycle(catch_up=True, once=True)
        assert daemon.queue.wait_idle(30), "runs still going after 30s"
        daemon.publish()


def fired(remote) -> list[tuple[str, str]]:
    return [(r["scheduled"], r["trigger"]["kind"]) for r in of_flow(remote_records(remote), "tick")]


def at(minutes: float) -> str:
    return utc_iso(H + timedelta(minutes=minutes))


@pytest.mark.parametrize("policy", ["none", "latest", "all"])
def test_once_follows_catchup_from_the_runs_branch(tmp_path, bare_remote, caplog, policy):
    manifest = (f"version: 1\nflows:\n  tick:\n    command: [\"true\"]\n    every: 10m\n    catchup: {policy}\n"
                "    overlap: queue\n")
    deploy(manifest_project(tmp_path, str(bare_remote), manifest))
    caplog.set_level(logging.INFO, "puppemon")

    # 1: nothing fired yet; counted from the flows commit, two days of fires came and went. The one at H is
    # a minute old: due now (within misfire_grace), not missed.
    once(bare_remote, tmp_path / "s1", Clock(H + timedelta(minutes=1)))
    first = {"none": [(at(0), "schedule")], "latest": [(at(0), "schedule")],
             "all": [(at(m), "catchup") for m in range(-190, 0, 10)] + [(at(0), "schedule")]}[policy]
    assert fired(bare_remote) == first
    if policy == "all":
        assert "tick missed more than 20 fire times; catching up the last 20 only" in caplog.text

    # 2: 35 minutes on, a new state directory: H+10, H+20, H+30 were missed (H+30 is 5.5 minutes old).
    once(bare_remote, tmp_path / "s2", Clock(H + timedelta(minutes=35.5)))
    second = {"none": [], "latest": [(at(30), "catchup")],
              "all": [(at(10), "catchup"), (at(20), "catchup"), (at(30), "catchup")]}[policy]
    assert fired(bare_remote) == first + second
    if policy == "none":
        assert "tick: 3 missed fires not run (catchup: none)" in caplog.text

    # 3: H+40 is 30 seconds old: due now under every policy, and nothing else is missed (but for `none`,
    # whose last fire is still H: H+10..H+30 are missed again, and still not run).
    once(bare_remote, tmp_path / "s3", Clock(H + timedelta(minutes=40.5)))
    assert fired(bare_remote) == first + second + [(at(40), "schedule")]

    # 4: a start with nothing new to run runs nothing (the last fire is H+40 now, for every policy).
    once(bare_remote, tmp_path / "s4", Clock(H + timedelta(minutes=41)))
    assert len(fired(bare_remote)) == len(first + second) + 1


def test_newest_fires_of_a_long_gap_are_the_newest():
    flow = parse("version: 1\nflows:\n  tick:\n    command: \"true\"\n    every: 1m\n").flows["tick"]
    since, now = H - timedelta(days=365), H + timedelta(seconds=30)
    fires, more = newest_fires(flow, since, now, 3)
    assert [utc_iso(t) for t in fires] == [at(-2), at(-1), at(0)] and more
    fires, more = newest_fires(flow, H - timedelta(minutes=2), now, 3)
    assert [utc_iso(t) for t in fires] == [at(-1), at(0)] and not more


def test_last_fires_reads_claims_too(tmp_path, bare_remote):
    """A claim names its fire in its file name: a fire claimed (by several daemons, or `backfill`) counts."""
    from puppemon.gitstore import Store
    from tests.conftest import git

    work = tmp_path / "w"
    git("init", "--quiet", "-b", "runs", str(work))
    claim = work / "claims" / f"{H:%Y/%m/%d}" / "tick" / f"{H:%Y%m%dT%H%M%S}.500Z.json"
    claim.parent.mkdir(parents=True)
    claim.write_text("{}")
    (claim.parent / "deploy-0123abc.json").write_text("{}")   # a run-on-deploy claim names no time
    git("add", "-A", cwd=work)
    git("commit", "--quiet", "-m", "claim", cwd=work)
    store = Store.discover(work)
    assert last_fires(store, "refs/heads/runs", ["tick", "other"]) == {"tick": H + timedelta(milliseconds=500)}
