"""`after:`: a flow runs when a run of another flow ends (real daemons, real git, one bare remote): chains
pass results along, statuses choose, the manifest refuses unknown upstreams and cycles, a run recorded while
the daemon was down is followed at start, and each upstream run starts its downstream once, also with two
daemons."""
from __future__ import annotations

import json
import time
from collections import Counter

import pytest

from puppemon.project.manifest import ManifestError, parse
from tests.conftest import git, puppemon
from tests.daemon_helpers import (DaemonProcess, deploy, fsck, manifest_project, of_flow, remote_records,
                                  result_of, run_daemon_once, wait_until)

pytestmark = pytest.mark.slow

STEP = """\
import puppemon


def main():
    t = puppemon.trigger()
    up = t.get("upstream") or {}
    before = (up.get("result") or {}).get("n", 0)
    return {"n": before + 1, "after": up.get("flow"), "kind": t["kind"]}
"""

CHAIN = """\
version: 1
flows:
  extract:
    entrypoint: step.py:main
  transform:
    entrypoint: step.py:main
    after: extract
  load:
    entrypoint: step.py:main
    after: {flow: transform, status: [succeeded]}
"""


def _records(bare, flow):
    return of_flow(remote_records(bare), flow)


def _trigger(repo, flow="extract"):
    puppemon("trigger", flow, cwd=repo)


def test_a_chain_passes_results_along(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), CHAIN, {"step.py": STEP})
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        _trigger(repo)
        loads = wait_until(lambda: _records(bare_remote, "load"), timeout=40, what="load's run",
                           on_fail=lambda: daemon.log[-3000:])
        daemon.stop()
    extract, transform = _records(bare_remote, "extract"), _records(bare_remote, "transform")
    assert [len(extract), len(transform), len(loads)] == [1, 1, 1]
    assert [result_of(bare_remote, r) for r in (extract[0], transform[0], loads[0])] == [
        {"n": 1, "after": None, "kind": "request"},
        {"n": 2, "after": "extract", "kind": "after"},
        {"n": 3, "after": "transform", "kind": "after"}]
    assert transform[0]["trigger"] == {"kind": "after", "upstream": {"id": extract[0]["id"], "flow": "extract",
                                                                      "status": "succeeded"}}
    assert loads[0]["trigger"]["upstream"]["id"] == transform[0]["id"]
    assert "Traceback" not in daemon.log
    fsck(bare_remote)
