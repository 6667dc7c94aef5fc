"""`after:`: a flow runs when a run of another flow ends (real daemons, real git, one bare remote): chains
pass results along, statuses choose, the manifest refuses unknown upstreams and cycles, a run recorded while
the daemon was down is followed at start, and each upstream run starts its downstream once, also with two
daemons."""
from __future__ import annotations

import json
import sys
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


PLACED = """\
version: 1
flows:
  extract:
    entrypoint: step.py:main
    runs_on: [extractor]
  transform:
    entrypoint: step.py:main
    after: extract
    runs_on: [main]
"""


def test_a_run_recorded_while_the_daemon_was_down_is_followed_at_start_once(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), PLACED, {"step.py": STEP})
    deploy(repo)
    _trigger(repo)
    # another daemon, which cannot take transform, records extract's run while the main daemon is down
    proc = run_daemon_once(str(bare_remote), tmp_path / "other", "--labels", "extractor", name="other")
    assert proc.returncode == 0, proc.stderr
    extract = _records(bare_remote, "extract")
    assert len(extract) == 1 and _records(bare_remote, "transform") == []
    for state in ("main", "main", "main", "fresh"):   # started three times, then with a state dir of nothing
        proc = run_daemon_once(str(bare_remote), tmp_path / state, "--labels", "main", name="main")
        assert proc.returncode == 0, proc.stderr
        assert "Traceback" not in proc.stderr
        transform = _records(bare_remote, "transform")
        assert len(transform) == 1, proc.stderr
    assert transform[0]["trigger"]["upstream"] == {"id": extract[0]["id"], "flow": "extract", "status": "succeeded"}
    assert result_of(bare_remote, transform[0])["n"] == 2
    claims = [p for p in git("--git-dir", str(bare_remote), "ls-tree", "-r", "--name-only", "runs").splitlines()
              if p.startswith("claims/")]
    assert claims == [f"claims/{extract[0]['id'][:4]}/{extract[0]['id'][4:6]}/{extract[0]['id'][6:8]}/transform/"
                      f"after-{extract[0]['id']}.json"]
    fsck(bare_remote)


def test_adding_after_does_not_follow_earlier_runs(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), CHAIN.replace("    after: extract\n", ""),
                            {"step.py": STEP})
    deploy(repo)
    _trigger(repo)
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    deploy(repo, CHAIN)   # transform now comes after extract: extract's run before it is not followed
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    assert [len(_records(bare_remote, f)) for f in ("extract", "transform", "load")] == [1, 0, 0]
    _trigger(repo)
    assert run_daemon_once(str(bare_remote), tmp_path / "state").returncode == 0
    assert [len(_records(bare_remote, f)) for f in ("extract", "transform", "load")] == [2, 1, 1]


def _knows(bare, name: str, other: str) -> bool:
    shown = git("--git-dir", str(bare), "show", f"refs/puppemon/status/{name}:status.json", check=False)
    return shown.startswith("{") and other in (json.loads(shown).get("peers") or {})


def test_two_daemons_follow_each_upstream_run_once(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), CHAIN, {"step.py": STEP})
    deploy(repo)
    daemons = [DaemonProcess(str(bare_remote), tmp_path / f"state{i}", name=f"d{i}").start() for i in range(2)]
    try:
        wait_until(lambda: _knows(bare_remote, "d0", "d1") and _knows(bare_remote, "d1", "d0"), timeout=30,
                   what="the two daemons list each other")
        for _ in range(4):
            _trigger(repo)
        wait_until(lambda: len(_records(bare_remote, "load")) >= 4, timeout=60, what="four runs of load",
                   on_fail=lambda: "\n".join(d.log[-2000:] for d in daemons))
        time.sleep(2)   # time for a second run of any of them to show (there must be none)
    finally:
        for d in daemons:
            d.stop()
    records = remote_records(bare_remote)
    extract, transform, load = (of_flow(records, f) for f in ("extract", "transform", "load"))
    assert len(extract) == 4
    for up, down in ((extract, transform), (transform, load)):
        followed = Counter(r["trigger"]["upstream"]["id"] for r in down)
        assert followed == Counter(r["id"] for r in up)   # each upstream run once, none twice
    assert {result_of(bare_remote, r)["n"] for r in load} == {3}
    for d in daemons:
        assert "Traceback" not in d.log, d.log[-3000:]
    fsck(bare_remote)


BIG = """\
version: 1
flows:
  extract:
    entrypoint: big.py:main
  transform:
    command: 'echo "${PUPPEMON_UPSTREAM_RESULT-none}"; PYTHON -c "import puppemon; print(puppemon.trigger()[\\"upstream\\"])"'
    after: extract
""".replace("PYTHON", sys.executable)   # the Python running the tests (a new machine may have no `python`)


def test_a_result_over_64_kib_is_not_passed_but_its_size_is(tmp_path, bare_remote):
    repo = manifest_project(tmp_path, str(bare_remote), BIG, {"big.py": "def main():\n    return 'x' * 70000\n"})
    deploy(repo)
    _trigger(repo)
    proc = run_daemon_once(str(bare_remote), tmp_path / "state")   # the chain goes on within one --once
    assert proc.returncode == 0, proc.stderr
    (extract,), (transform,) = _records(bare_remote, "extract"), _records(bare_remote, "transform")
    run = transform["id"]
    log = git("--git-dir", str(bare_remote), "show", f"runs:runs/transform/{run[:4]}/{run[4:6]}/{run[6:8]}/{run}/log.txt")
    assert log.splitlines() == ["none", str({"id": extract["id"], "flow": "extract", "status": "succeeded",
                                             "result_size": 70003})]
    assert transform["trigger"]["upstream"]["result_size"] == 70003
