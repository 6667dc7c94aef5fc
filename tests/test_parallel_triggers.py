"""Many `puppemon trigger` at once: from clones of their own, and from one shared checkout.

Every one must succeed (exit 0, its request id printed, no error), and the daemon must
serve every request exactly once: one run record per request on the remote.
"""
from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import git
from tests.daemon_helpers import DaemonProcess, deploy, fsck, linear, manifest_project, remote_records, wait_until

pytestmark = pytest.mark.slow

COUNT = 20

MANIFEST = """\
version: 1
flows:
  hello:
    command: echo hello
    overlap: parallel
"""


def _trigger_all(checkouts: list[Path]) -> list[subprocess.CompletedProcess]:
    """Start `puppemon trigger hello` in each checkout at once; wait for them all."""
    procs = [subprocess.Popen([sys.executable, "-m", "puppemon", "trigger", "hello"], cwd=where,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for where in checkouts]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return results


def _served_once(bare: Path, results: list[subprocess.CompletedProcess], daemon: DaemonProcess) -> None:
    failed = [(r.returncode, r.stderr) for r in results if r.returncode != 0 or r.stderr]
    assert failed == [], failed
    ids = [r.stdout.strip() for r in results]
    assert len(set(ids)) == COUNT, ids
    sent = set(git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs", "requests/").split())
    assert {p.rsplit("/", 1)[-1] for p in sent if not p.endswith((".claim.json", ".done.json"))} == {
        f"{i}.json" for i in ids}

    def served() -> Counter:
        return Counter(r.get("request") for r in remote_records(bare) if r.get("request") in ids)

    wait_until(lambda: len(served()) == COUNT, timeout=40, what=f"{COUNT} requests served",
               on_fail=lambda: f"{served()}\n{daemon.log}")
    assert max(served().values()) == 1, served()


def test_twenty_triggers_from_twenty_clones_all_go_out_and_are_served_once(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST)
    deploy(repo)
    clones = []
    for i in range(COUNT):
        clones.append(tmp_path / f"clone{i}")
        git("clone", "--quiet", str(bare_remote), str(clones[-1]))
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--max-parallel", "4") as daemon:
        started = time.monotonic()
        results = _trigger_all(clones)
        assert time.monotonic() - started < 60
        _served_once(bare_remote, results, daemon)
        assert daemon.stop() == 0, daemon.log
    fsck(bare_remote)
    assert linear(bare_remote)


def test_twenty_triggers_from_one_checkout_all_go_out_and_are_served_once(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), MANIFEST)
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state", "--max-parallel", "4") as daemon:
        started = time.monotonic()
        results = _trigger_all([repo] * COUNT)
        assert time.monotonic() - started < 60
        _served_once(bare_remote, results, daemon)
        assert daemon.stop() == 0, daemon.log
    local = set(git("ls-tree", "-r", "--name-only", "runs", "requests/", cwd=repo).split())
    assert len([p for p in local if p.endswith(".json") and p.count(".") == 1]) == COUNT
    fsck(bare_remote)
    assert linear(bare_remote)
