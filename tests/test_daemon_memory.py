"""What a daemon keeps in memory does not grow with the runs it has served: 2,000 HTTP-triggered runs of
a daemon built in-process (real git, the test's clock), then the sizes of what it tracks.

The flow asks for a secret the daemon has not got, so each run ends at its start, failed, without a
process (as fast as a run gets): its request, claim, journal entry, run thread and record go through the
daemon as any run's do, which is what is counted here."""
from __future__ import annotations

import sys
from datetime import timedelta

import pytest

from tests.conftest import git
from tests.daemon_helpers import deploy, fsck, linear, manifest_project
from tests.test_daemon_inprocess import Clock, running

RUNS = 2000
BATCH = 16         # runs asked for at once (--max-parallel), then waited for
CYCLE_EVERY = 80   # runs between two cycles of the daemon (fetch, requests, publish)
QUICK = 'version: 1\nflows:\n  quick:\n    command: ["true"]\n    overlap: parallel\n'
REFUSED = QUICK + "    secrets: [token]\n"


def tracked(daemon) -> dict[str, int]:
    """The sizes of the daemon's per-run bookkeeping."""
    requests = daemon.requests
    return {
        "request server: started runs": len(requests.submitted),
        "request server: settled requests": len(requests.settled),
        "request server: recorded, not seen yet": len(getattr(requests, "_recorded", ())),
        "request server: requests left to look at": sum(len(again) for looked in getattr(requests, "_looked", {})
                                                        .values() for _tree, again in looked.values()),
        "ledger: records waiting": daemon.ledger.waiting(),
        "queue: queued or running": len(daemon.queue.pending) + len(daemon.queue.active),
        "notifier: threads": len(daemon.notifier.threads),
        "recorder: dropped on replay": len(daemon.recorder.dropped),
        "store: blob sizes kept": len(daemon.store._sizes),
        "gitstore: ref names kept": len(getattr(sys.modules.get("puppemon.gitstore.memory"), "_names", ())),
    }


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_thousand_runs_leave_nothing_behind_that_grows(tmp_path, bare_remote):
    deploy(manifest_project(tmp_path, str(bare_remote), REFUSED))
    clock = Clock()
    with running(bare_remote, tmp_path / "state", clock, max_parallel=BATCH) as daemon:
        daemon.cycle()
        sizes = []
        for n in range(RUNS // BATCH):
            for _ in range(BATCH):
                clock.advance(1)
                assert daemon.run_now("quick", {}, "127.0.0.1") is not None
            assert daemon.queue.wait_idle(30)
            if (n + 1) * BATCH % CYCLE_EVERY == 0:
                daemon.cycle()
                sizes.append(tracked(daemon))
        daemon.cycle()
        clock.advance(1)
        daemon.cycle()  # the remote pass sees what the last cycle published
        after = tracked(daemon)
        assert daemon.heap.trims >= 1      # publishing gave the C heap's free pages back (daemon/heap.py)
        probe = "requests/2026/11/24/" + "x" * 40  # a new path, as a cycle looks up new date dirs
        refs = sys.getrefcount(probe)
        for _ in range(100):
            assert daemon.store.lookup(daemon.store.ref("refs/heads/runs"), probe) is None
        kept = sys.getrefcount(probe) - refs
    early = sizes[len(sizes) // 10]
    for name, size in after.items():
        assert size <= max(early[name], 2 * BATCH), (name, early[name], size)
    assert max(s["request server: settled requests"] for s in sizes) <= 2 * CYCLE_EVERY
    assert max(s["request server: started runs"] for s in sizes) <= 2 * CYCLE_EVERY
    assert kept == 0, "pygit2 keeps the paths it is given: the store must not hand them over"
    paths = git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs", "runs/quick").split()
    assert len([p for p in paths if p.endswith("/run.json")]) == RUNS
    statuses = git("--git-dir", str(bare_remote), "log", "--format=%(trailers:key=Puppemon-Status,valueonly)",
                   "runs").split()
    assert statuses == ["failed"] * RUNS
    fsck(bare_remote)
    assert linear(bare_remote)


def test_a_clock_that_moves_to_the_next_day_drops_the_days_left_behind(tmp_path, bare_remote):
    deploy(manifest_project(tmp_path, str(bare_remote), QUICK))
    clock = Clock()
    with running(bare_remote, tmp_path / "state", clock) as daemon:
        daemon.cycle()
        assert daemon.run_now("quick", {}, "127.0.0.1") is not None
        assert daemon.queue.wait_idle(30)
        daemon.cycle()
        before = dict(daemon.requests._looked["local"])
        clock.advance(timedelta(days=30).total_seconds())
        daemon.cycle()
        after = dict(daemon.requests._looked["local"])
    assert list(before) == ["requests/2026/11/25"] and after == {}  # dirs that left the window
