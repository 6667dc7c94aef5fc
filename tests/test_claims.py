"""Several daemons on one remote: each fire runs once, a daemon joining causes no double run, a daemon
alone pushes no claim, and overlap and concurrency hold across daemons (real daemons, one bare remote)."""
from __future__ import annotations

import signal
import time
from collections import Counter
from datetime import datetime, timedelta, timezone

import pytest

from tests.conftest import git
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, linear, manifest_project, of_flow, remote_records,
                                  wait_until)

pytestmark = pytest.mark.slow
UTC = timezone.utc

EVERY_SECOND = """\
version: 1
flows:
  tick:
    command: "true"
    every: 1s
    overlap: parallel
"""


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _claims(bare) -> list[str]:
    tree = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs")
    return [p for p in tree.splitlines() if p.startswith("claims/")]


def _check_history(bare) -> None:
    fsck(bare)
    assert linear(bare)


@pytest.fixture
def project(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), EVERY_SECOND)
    deploy(repo)
    return repo


def test_three_daemons_run_each_fire_once(project, bare_remote, tmp_path):
    daemons = [DaemonProcess(str(bare_remote), tmp_path / f"state{i}", name=f"d{i}").start() for i in range(3)]
    try:
        started = datetime.now(UTC)
        time.sleep(45)   # the first ~20 s: the daemons find each other (status pushes, acknowledgements)
        stopped = datetime.now(UTC)
    finally:
        for d in daemons:
            d.stop()
    runs = [r for r in of_flow(remote_records(bare_remote), "tick") if r["status"] == "succeeded"]
    by_time = Counter(r["scheduled"] for r in runs)
    assert [t for t, n in by_time.items() if n > 1] == [], "a fire ran twice"
    assert len(runs) == len(by_time)
    assert all(_moment(t).microsecond == 0 for t in by_time)   # every: 1s fires on whole seconds, everywhere
    # after the warm-up every whole second ran, once (the end is left 3 s to finish and be recorded)
    first = started.replace(microsecond=0) + timedelta(seconds=22)
    wanted = {first + timedelta(seconds=k) for k in range(int((stopped - first).total_seconds()) - 3)}
    missing = sorted(wanted - {_moment(t) for t in by_time})
    assert missing == [], f"fires missing after the warm-up: {missing[:5]}"
    assert len({r["daemon"] for r in runs}) >= 2   # they share the work
    assert len(_claims(bare_remote)) >= len(wanted)   # and claimed each fire
    for d in daemons:
        assert "Traceback" not in d.log, d.log[-3000:]
    _check_history(bare_remote)


def test_a_daemon_joining_causes_no_double_run_and_one_alone_claims_nothing(project, bare_remote, tmp_path):
    first = DaemonProcess(str(bare_remote), tmp_path / "state-a", name="a").start()
    try:
        wait_until(lambda: len(of_flow(remote_records(bare_remote), "tick")) >= 3, timeout=30,
                   what="three runs of the daemon alone")
        assert _claims(bare_remote) == []   # alone: no claim, no push on the way of a fire
        second_ran = 0
        for attempt in range(10):
            second = DaemonProcess(str(bare_remote), tmp_path / "state-b", name="b").start()
            try:
                if attempt % 2:   # stay until it has run fires of its own (claimed), then leave
                    before = second_ran
                    wait_until(lambda: sum(r["daemon"] == "b" for r in of_flow(remote_records(bare_remote), "tick"))
                               > before, timeout=30, what="a run by the second daemon")
                else:             # leave at once: while it is still waiting to be seen
                    time.sleep(1.5)
            finally:
                assert second.stop(signal.SIGTERM) == 0
            second_ran = sum(r["daemon"] == "b" for r in of_flow(remote_records(bare_remote), "tick"))
            assert "Traceback" not in second.log, second.log[-3000:]
        time.sleep(2)
    finally:
        first.stop()
    runs = of_flow(remote_records(bare_remote), "tick", status="succeeded")
    twice = [t for t, n in Counter(r["scheduled"] for r in runs).items() if n > 1]
    assert twice == [], f"fires that ran twice: {twice}"
    assert second_ran >= 5 and sum(r["daemon"] == "a" for r in runs) > second_ran
    assert "Traceback" not in first.log, first.log[-3000:]
    _check_history(bare_remote)


LONG_RUNS = """\
version: 1
flows:
  one-at-a-time:
    command: sleep 2.5
    every: 1s
    overlap: skip
  limited:
    command: sleep 2.5
    every: 1s
    overlap: parallel
    concurrency: 1
"""


def _most_at_once(runs: list[dict]) -> int:
    events = sorted([(_moment(r["started"]), 1) for r in runs] + [(_moment(r["finished"]), -1) for r in runs])
    most = now = 0
    for _, step in events:   # an end sorts before a start at the same moment
        now += step
        most = max(most, now)
    return most


def test_overlap_skip_and_concurrency_hold_across_two_daemons(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), LONG_RUNS)
    deploy(repo)
    daemons = [DaemonProcess(str(bare_remote), tmp_path / f"state{i}", name=f"d{i}").start() for i in range(2)]
    try:
        def enough():
            records = remote_records(bare_remote)
            return all(len({r["daemon"] for r in of_flow(records, f, status="succeeded")}) == 2
                       and len(of_flow(records, f, status="succeeded")) >= 5 for f in ("one-at-a-time", "limited"))
        wait_until(enough, timeout=75, what="runs of both flows on both daemons")
    finally:
        for d in daemons:
            d.stop()
    records = remote_records(bare_remote)
    for flow in ("one-at-a-time", "limited"):
        ran = of_flow(records, flow, status="succeeded")
        assert _most_at_once(ran) == 1, [(r["daemon"], r["started"], r["finished"]) for r in ran]
        skipped = of_flow(records, flow, status="skipped")
        assert skipped, f"{flow}: no fire was skipped"
        why = "previous run was still going on another daemon" if flow == "one-at-a-time" else (
            "1 run of it already in flight on another daemon (concurrency: 1)")
        assert any(why in (r.get("error") or "") for r in skipped), {r.get("error") for r in skipped}
    _check_history(bare_remote)


def test_fire_keys_and_claim_paths_are_the_scheduled_utc_time():
    from puppemon.formats import claim_path, fire_key

    moment = datetime(2026, 11, 25, 16, 30, tzinfo=timezone(timedelta(hours=8)))
    assert fire_key(moment) == "20261125T083000Z"
    assert fire_key(moment + timedelta(milliseconds=500)) == "20261125T083000.500Z"
    assert claim_path("backup", moment, fire_key(moment)) == "claims/2026/11/25/backup/20261125T083000Z.json"


QUEUED = """\
version: 1
flows:
  queued:
    command: sleep 2.5
    every: 2s
    overlap: queue
  on-deploy:
    command: "true"
    run_on_deploy: true
"""


def _knows(bare, name: str, other: str) -> bool:
    import json

    shown = git("--git-dir", str(bare), "show", f"refs/puppemon/status/{name}:status.json", check=False)
    return shown.startswith("{") and other in (json.loads(shown).get("peers") or {})


def test_overlap_queue_and_run_on_deploy_across_two_daemons(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), QUEUED)
    deploy(repo)
    first_sha = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    daemons = [DaemonProcess(str(bare_remote), tmp_path / f"state{i}", name=f"d{i}").start() for i in range(2)]
    try:
        wait_until(lambda: _knows(bare_remote, "d0", "d1") and _knows(bare_remote, "d1", "d0"), timeout=30,
                   what="the two daemons list each other")
        deploy(repo, QUEUED.replace('command: "true"', 'command: "true "'))
        second_sha = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
        by = lambda sha: [r for r in of_flow(remote_records(bare_remote), "on-deploy")  # noqa: E731
                          if r["trigger"].get("by") == sha[:7]]
        wait_until(lambda: by(second_sha), timeout=30, what="the run on deploy")
        wait_until(lambda: len({r["daemon"] for r in of_flow(remote_records(bare_remote), "queued")}) == 2
                   and len(of_flow(remote_records(bare_remote), "queued")) >= 6, timeout=60,
                   what="queued runs on both daemons")
        time.sleep(1)
        assert len(by(second_sha)) == 1 and len(by(first_sha)) <= 1
    finally:
        for d in daemons:
            d.stop()
    records = remote_records(bare_remote)
    queued = of_flow(records, "queued")
    assert {r["status"] for r in queued} == {"succeeded"}   # waited, never skipped
    assert _most_at_once(queued) == 1, [(r["daemon"], r["started"], r["finished"]) for r in queued]
    assert len(_claims(bare_remote)) >= len(queued)
    _check_history(bare_remote)


def test_the_hand_over_step_by_step_in_process(project, bare_remote, tmp_path, caplog):
    """Two daemons driven one cycle and one fire at a time, with the test's clock: a newcomer leaves fires
    to the daemon alone until that one lists it; from then on each fire is claimed and runs once; when the
    newcomer stops, the other is alone again and claims nothing."""
    import logging

    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import Settings
    from tests.test_daemon_inprocess import Clock

    caplog.set_level(logging.INFO, "puppemon")
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    clock = Clock(start)
    at = lambda s: start + timedelta(seconds=s)  # noqa: E731
    settings = dict(remote=str(bare_remote), grace=5)
    old = Daemon(Settings(state=tmp_path / "s1", name="old", **settings), clock=clock).open()
    new = Daemon(Settings(state=tmp_path / "s2", name="new", **settings), clock=clock)
    try:
        old.cycle(catch_up=True)
        old.fire("tick", at(1))                        # alone: no claim
        clock.advance(1.5)
        new.open().cycle(catch_up=True)                # its status is out, and it sees `old`...
        new.fire("tick", at(2))                        # ... which has not seen it: not its fire
        old.fire("tick", at(2))                        # `old` still alone, unclaimed
        assert "tick: fire 20261125T080002Z left to the other daemons (daemon old has not seen this daemon yet)" \
            in caplog.text
        clock.advance(1)
        old.cycle()                                    # sees `new` (which lists it) and says so
        new.cycle()                                    # sees that `old` lists it
        for daemon in (new, old):                      # from now on: claimed, first pushed wins
            daemon.fire("tick", at(4))
        assert "another daemon took tick at 20261125T080004Z" in caplog.text
        for daemon in (old, new):
            assert daemon.queue.wait_idle(30)
            daemon.publish()
        assert new.close() == 0                        # its last status says it stopped
        clock.advance(2)
        old.cycle()
        old.fire("tick", at(6))                        # alone again: no claim
        assert old.queue.wait_idle(30)
        old.publish()
    finally:
        old.close()
    runs = of_flow(remote_records(bare_remote), "tick")
    assert [(r["scheduled"][11:19], r["daemon"]) for r in runs] == [
        ("08:00:01", "old"), ("08:00:02", "old"), ("08:00:04", "new"), ("08:00:06", "old")]
    assert _claims(bare_remote) == ["claims/2026/11/25/tick/20261125T080004Z.json"]
    _check_history(bare_remote)


def test_during_an_outage_a_daemon_alone_fires_and_one_in_company_does_not(project, bare_remote, tmp_path, caplog):
    import logging

    from puppemon.daemon.loop import Daemon
    from puppemon.daemon.settings import Settings
    from tests.test_daemon_inprocess import Clock

    caplog.set_level(logging.INFO, "puppemon")
    start = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    clock, away = Clock(start), bare_remote.with_name("away.git")
    settings = dict(remote=str(bare_remote), grace=5)
    old = Daemon(Settings(state=tmp_path / "s1", name="old", **settings), clock=clock).open()
    new = Daemon(Settings(state=tmp_path / "s2", name="new", **settings), clock=clock)
    try:
        old.cycle(catch_up=True)
        bare_remote.rename(away)                       # the remote cannot be reached
        old.cycle()
        old.fire("tick", start + timedelta(seconds=1))   # alone: it fires, as it always did
        assert old.queue.wait_idle(30)
        away.rename(bare_remote)
        old.cycle()                                    # and publishes when the remote is back
        clock.advance(1)
        new.open().cycle(catch_up=True)
        old.cycle()
        new.cycle()
        bare_remote.rename(away)
        old.cycle()                                    # it knows `new`, and keeps knowing it
        old.fire("tick", start + timedelta(seconds=3))   # no claim can go out: not run
        assert "tick 20261125T080003Z not run: its claim could not reach the remote" in caplog.text
        away.rename(bare_remote)
        new.close()
        old.cycle()
    finally:
        if away.exists():
            away.rename(bare_remote)
        old.close()
    runs = of_flow(remote_records(bare_remote), "tick")
    assert [(r["scheduled"][11:19], r["daemon"]) for r in runs] == [("08:00:01", "old")]
    assert _claims(bare_remote) == []                  # the claim that could not go out was taken back
    _check_history(bare_remote)


SLOW_EVERY_SECOND = """\
version: 1
flows:
  tick:
    command: sleep 3
    every: 1s
    overlap: parallel
"""


def test_three_daemons_one_killed_9_its_run_is_recorded_crashed_and_the_fires_go_on(tmp_path, bare_remote):
    """Three daemons share an `every: 1s` flow whose runs take 3 s; one is killed -9 with a run in flight:
    another records that run `crashed`, the other two go on with every fire, and no fire runs twice."""
    from tests.test_failover import BEAT, BOUND, status_of

    repo = manifest_project(tmp_path, str(bare_remote), SLOW_EVERY_SECOND)
    deploy(repo)
    daemons = [DaemonProcess(str(bare_remote), tmp_path / f"state{i}", name=f"d{i}", env=BEAT).start()
               for i in range(3)]
    victim = daemons[0]
    try:
        # the victim has run fires of its own (so it was seen and claims), and has one in flight now
        wait_until(lambda: sum(r["daemon"] == "d0" for r in of_flow(remote_records(bare_remote), "tick")) >= 2,
                   timeout=60, what="two runs by d0", on_fail=lambda: victim.log[-3000:])

        def fresh_run() -> set[str]:   # runs d0 started under 1.5 s ago: still going (they take 3 s)
            status, now = status_of(bare_remote, "d0") or {}, datetime.now(UTC)
            return {r["run_id"] for r in status.get("in_flight") or []
                    if (now - _moment(r["started"])).total_seconds() < 1.5}
        lost = wait_until(fresh_run, timeout=20, what="d0 with a run just started")
        victim.kill9()
        killed = datetime.now(UTC)
        last = {r["run_id"] for r in (status_of(bare_remote, "d0") or {}).get("in_flight") or []}

        def crashed() -> list[dict]:
            return [r for r in of_flow(remote_records(bare_remote), "tick", status="crashed") if r["id"] in lost]
        wait_until(lambda: len(crashed()) == len(lost), timeout=BOUND + 30, what="d0's runs recorded crashed",
                   on_fail=lambda: daemons[1].log[-3000:])
        time.sleep(4)   # fires after the kill, run by the two left
        stopped = datetime.now(UTC)
    finally:
        for d in daemons[1:]:
            d.stop()
    runs = of_flow(remote_records(bare_remote), "tick")
    assert all("stopped heartbeating" in r["error"] and r["daemon"] == "d0" for r in crashed())
    assert Counter(r["id"] for r in runs if r["id"] in last) == Counter(last)   # each recorded once, one way or other
    by_time = Counter(r["scheduled"] for r in runs)
    assert [t for t, n in by_time.items() if n > 1] == [], "a fire ran (or was recorded) twice"
    after = sorted(_moment(r["scheduled"]) for r in runs if r["status"] == "succeeded"
                   and killed < _moment(r["scheduled"]) < stopped - timedelta(seconds=4))
    assert after, "no fire ran after the kill"
    gaps = [(b - a).total_seconds() for a, b in zip([killed, *after], after)]
    assert max(gaps) <= BOUND + 3, f"a gap of {max(gaps)} s after the kill (bound {BOUND} s)"
    _check_history(bare_remote)
