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


STATUSES = """\
version: 1
flows:
  extract:
    command: "exit 3"
  on-success:
    command: "true"
    after: {flow: extract, status: [succeeded]}
  on-failure:
    command: 'echo "$PUPPEMON_UPSTREAM_FLOW $PUPPEMON_UPSTREAM_STATUS $PUPPEMON_UPSTREAM_RUN"'
    after: {flow: extract, status: [failed, timed_out]}
"""


def test_a_failed_run_starts_the_flows_after_its_failures_only(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), STATUSES)
    deploy(repo)
    with DaemonProcess(str(bare_remote), tmp_path / "state") as daemon:
        _trigger(repo)
        wait_until(lambda: _records(bare_remote, "on-failure"), timeout=40, what="on-failure's run",
                   on_fail=lambda: daemon.log[-3000:])
        _trigger(repo)   # a second failure: a second run of on-failure, and still none of on-success
        wait_until(lambda: len(_records(bare_remote, "on-failure")) == 2, timeout=40, what="a second run",
                   on_fail=lambda: daemon.log[-3000:])
        daemon.stop()
    extract = _records(bare_remote, "extract")
    assert [r["status"] for r in extract] == ["failed", "failed"]
    assert _records(bare_remote, "on-success") == []
    followed = _records(bare_remote, "on-failure")
    assert sorted(r["trigger"]["upstream"]["id"] for r in followed) == [r["id"] for r in extract]
    first = followed[0]
    log = git("--git-dir", str(bare_remote), "show",
              f"runs:runs/on-failure/{first['id'][:4]}/{first['id'][4:6]}/{first['id'][6:8]}/{first['id']}/log.txt")
    assert log.strip() == f"extract failed {first['trigger']['upstream']['id']}"


@pytest.mark.parametrize("manifest, message", [
    ("version: 1\nflows:\n  a:\n    command: x\n    after: c\n  b:\n    command: x\n    after: {flow: a}\n"
     "  c:\n    command: x\n    after:\n      - flow: b\n        status: [failed]\n",
     "puppemon.yaml:12:15: flows.c.after: after: makes a cycle, a -> b -> c -> a (each waits for the one "
     "before it: remove one of these after: entries)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    after: b\n  b:\n    command: x\n    after: a\n",
     "puppemon.yaml:8:12: flows.b.after: after: makes a cycle, a -> b -> a (each waits for the one before it: "
     "remove one of these after: entries)"),
    ("version: 1\nflows:\n  a:\n    command: x\n    after: a\n",
     "puppemon.yaml:5:12: flows.a.after: a cannot run after itself (name another flow)"),
    ("version: 1\nflows:\n  extract:\n    command: x\n  load:\n    command: x\n    after: {flow: extrat}\n",
     "puppemon.yaml:7:19: flows.load.after: no flow 'extrat' in this manifest (did you mean 'extract'?)"),
    ("version: 1\nflows:\n  extract:\n    command: x\n  load:\n    command: x\n    after: {flow: zzz}\n",
     "puppemon.yaml:7:19: flows.load.after: no flow 'zzz' in this manifest (flows: extract, load)"),
    ("version: 1\nflows:\n  a:\n    command: x\n  b:\n    command: x\n    after: {flow: a, status: skipped}\n",
     "puppemon.yaml:7:30: flows.b.after.status: 'skipped' is not allowed "
     "(use succeeded | failed | timed_out | cancelled | crashed)"),
    ("version: 1\nflows:\n  a:\n    command: x\n  b:\n    command: x\n    after: {status: [failed]}\n",
     "puppemon.yaml:7:12: flows.b.after: flow is missing (name the flow whose runs start this one)"),
    ("version: 1\nflows:\n  a:\n    command: x\n  b:\n    command: x\n    after: {flow: a, when: done}\n",
     "puppemon.yaml:7:22: flows.b.after.when: unknown key (allowed: flow, status)"),
])
def test_after_errors_name_the_place(manifest, message):
    with pytest.raises(ManifestError) as info:
        parse(manifest)
    assert str(info.value) == message


def test_a_cycle_refuses_the_push_and_validate(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), "version: 1\nflows:\n  a:\n    command: x\n    after: b\n"
                            "  b:\n    command: x\n    after: a\n")
    for verb in ("validate", "push"):
        proc = puppemon(verb, cwd=repo, check=False)
        assert (proc.returncode, proc.stderr) == (1, "Error: puppemon.yaml:8:12: flows.b.after: after: makes a "
                                                   "cycle, a -> b -> a (each waits for the one before it: remove "
                                                   "one of these after: entries)\n")


def test_validate_shows_the_chain(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), CHAIN, {"step.py": STEP})
    out = puppemon("validate", cwd=repo, env={"COLUMNS": "200"}).stdout
    assert "after extract (succeeded)" in out
    assert "after transform (succeeded)" in out
    assert "chain: extract -> transform -> load" in out
    shape = json.loads(puppemon("validate", "--json", cwd=repo).stdout)
    assert shape["chains"] == [["extract", "transform", "load"]]
