"""Run and cancel requests on the runs branch: `puppemon trigger`, `puppemon cancel`, claims."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from tests.daemon_helpers import DaemonProcess, wait_until
from tests.conftest import git, make_repo, puppemon

SLOW = """\
version: 1
variables:
  REGION: tw
flows:
  hello:
    entrypoint: job.py:main
  fails:
    command: echo going down; exit 3
  slow:
    command: echo started; exec sleep 60
"""
JOB = ("import puppemon\n\ndef main(n=1, flag=False, name='x'):\n"
       "    print('hello', repr(n), repr(flag), repr(name), puppemon.variable('REGION'))\n"
       "    return {'n': n}\n")


# -- helpers shared by the request, HTTP, secrets and notification tests -------

def setup_project(tmp_path: Path, remote: Path, manifest: str = SLOW, files: dict | None = None) -> Path:
    """A project pushed to `remote` (its `origin`)."""
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": manifest, "job.py": JOB, **(files or {})})
    git("remote", "add", "origin", str(remote), cwd=repo)
    puppemon("push", cwd=repo)
    return repo


class DaemonProc(DaemonProcess):
    """A `puppemon daemon` process, started at once; its stderr goes to a file (`.log`)."""

    def __init__(self, remote: Path, state: Path, *args: str, name: str = "d1", env: dict | None = None):
        super().__init__(str(remote), state, *args, name=name, env=env)
        self.start()

    def port(self) -> int:
        found = wait_until(lambda: re.search(r"HTTP hook listening on http://127\.0\.0\.1:(\d+)", self.log),
                           15, "the HTTP hook", lambda: self.log)
        return int(found.group(1))

    def kill(self) -> None:
        self.__exit__()


@pytest.fixture
def daemons():
    started: list[DaemonProc] = []

    def start(*args, **kwargs) -> DaemonProc:
        d = DaemonProc(*args, **kwargs)
        started.append(d)
        return d

    yield start
    for d in started:
        d.kill()


def remote_files(bare: Path, prefix: str = "") -> list[str]:
    if subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "-q", "--verify", "runs"],
                      capture_output=True).returncode:
        return []
    return [p for p in git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs").splitlines()
            if p.startswith(prefix)]


def remote_json(bare: Path, path: str) -> dict:
    return json.loads(git("--git-dir", str(bare), "show", f"runs:{path}"))


def records(bare: Path) -> list[dict]:
    return sorted((remote_json(bare, p) for p in remote_files(bare, "runs/") if p.endswith("/run.json")),
                  key=lambda r: r["id"])


def records_for(bare: Path, request_id: str) -> list[dict]:
    return [r for r in records(bare) if r.get("request") == request_id]


def run_once(remote: Path, state: Path, *args: str, name: str = "d1", env: dict | None = None):
    return puppemon("daemon", "--remote", str(remote), "--state", str(state), "--name", name, "--once",
                    *args, check=False, env=env)


def test_replay_drops_a_commit_whose_path_the_remote_already_has_with_other_content(tmp_path, bare_remote):
    a = Recorder(Store.open_or_init_bare(tmp_path / "a.git"), remote=str(bare_remote))
    b = Recorder(Store.open_or_init_bare(tmp_path / "b.git"), remote=str(bare_remote))
    a.add({"seed.json": b"{}\n"}, "seed\n")
    assert a.publish()
    b.sync()
    a.add({"requests/2026/11/25/r1.claim.json": b"a\n"}, "claim by a\n")
    b.add({"requests/2026/11/25/r1.claim.json": b"b\n"}, "claim by b\n")
    b.add({"other.json": b"b\n"}, "unrelated\n")
    b.add({"same.json": b"x\n"}, "same content as a\n")
    a.add({"same.json": b"x\n"}, "same content as b\n")
    assert a.publish() and b.publish()
    remote = Store(bare_remote)
    tip = remote.ref("refs/heads/runs")
    assert remote.read(tip, "requests/2026/11/25/r1.claim.json") == b"a\n"
    assert remote.read(tip, "other.json") == b"b\n"
    assert b.dropped == ["claim by b\n"]
    log = git("--git-dir", str(bare_remote), "log", "--format=%s", "runs").splitlines()
    assert log == ["same content as a", "unrelated", "same content as b", "claim by a", "seed"]
    assert b.store.ref("refs/heads/runs") == tip


def test_trigger_writes_a_request_and_prints_its_id(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote)
    out = puppemon("trigger", "hello", "-p", "n=3", "--params-json", '{"name": "ann", "n": 1}', cwd=repo).stdout
    rid = out.strip()
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", rid)
    path = f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}.json"
    assert remote_files(bare_remote, "requests/") == [path]
    body = remote_json(bare_remote, path)
    assert {k: body[k] for k in ("schema", "id", "kind", "flow", "params")} == {
        "schema": 1, "id": rid, "kind": "run", "flow": "hello", "params": {"name": "ann", "n": 3}}
    assert body["by"].endswith("@" + os.uname().nodename) and body["time"].endswith("Z")
    assert git("--git-dir", str(bare_remote), "log", "-1", "--format=%B", "runs") == (
        f"request: run hello (by {body['by']})\n\nPuppemon-Request: {rid}\nPuppemon-Request-Kind: run\n\n")
    # the user's own branches and HEAD are untouched; the local runs branch has the request
    assert git("rev-parse", "runs", cwd=repo) == git("--git-dir", str(bare_remote), "rev-parse", "runs")
    assert git("symbolic-ref", "HEAD", cwd=repo).strip() == "refs/heads/main"


def test_trigger_wait_times_out_with_exit_2(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote)
    proc = puppemon("trigger", "hello", "--wait", "--timeout", "1", cwd=repo, check=False)
    rid = proc.stdout.strip()
    assert proc.returncode == 2
    assert proc.stderr == (f"waiting for a daemon to take request {rid} ...\n"
                           f"Error: timed out after 1s waiting for request {rid} (no daemon has taken it yet); "
                           "it stays on the runs branch and will still be served\n")


def test_trigger_wait_ignores_a_claim_that_is_not_one(tmp_path, bare_remote):
    # Anyone who can push may write <id>.claim.json; --wait reads it as no claim, as the daemons do.
    repo = setup_project(tmp_path, bare_remote)
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "trigger", "hello", "--wait", "--timeout", "4"],
                            cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rid = proc.stdout.readline().strip()
    [path] = remote_files(bare_remote, "requests/")
    store = Store(bare_remote)
    tip = store.ref("refs/heads/runs")
    tree = store.update_tree(tip, {path.replace(".json", ".claim.json"): (store.blob(b"[1]\n"), 0o100644)})
    store.set_ref("refs/heads/runs", store.commit(tree, [tip], "a claim that is not one\n"), tip)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2, err
    assert err == (f"waiting for a daemon to take request {rid} ...\n"
                   "no daemon has sent a heartbeat to origin lately: the request waits until one starts "
                   "(`puppemon status` shows the daemons)\n"
                   f"Error: timed out after 4s waiting for request {rid} (no daemon has taken it yet); "
                   "it stays on the runs branch and will still be served\n")


@pytest.mark.slow
def test_trigger_wait_follows_the_run_and_exits_with_its_code(tmp_path, bare_remote, daemons):
    repo = setup_project(tmp_path, bare_remote)
    daemons(bare_remote, tmp_path / "state")
    proc = puppemon("trigger", "hello", "-p", "n=3", "-p", "flag=true", "-p", "name=ann",
                    "--wait", "--timeout", "60", cwd=repo, check=False)
    assert proc.returncode == 0, proc.stderr
    rid = proc.stdout.splitlines()[0]
    assert proc.stdout == f"{rid}\nhello 3 True 'ann' tw\n"
    [record] = records_for(bare_remote, rid)
    assert record["params"] == {"n": 3, "flag": True, "name": "ann"}
    assert record["trigger"]["kind"] == "request" and record["status"] == "succeeded"
    assert proc.stderr.splitlines()[1:] == [f"run {record['id']} on d1",
                                            f"run {record['id']} (hello): succeeded in "
                                            f"{record['duration']:.1f}s"]
    msg = git("--git-dir", str(bare_remote), "log", "--format=%B", "--grep", f"Puppemon-Request: {rid}",
              "--grep", "Puppemon-Status", "--all-match", "runs")
    assert f"Puppemon-Run: {record['id']}\n" in msg

    failing = puppemon("trigger", "fails", "--wait", cwd=repo, check=False)
    assert failing.returncode == 3
    assert failing.stdout.splitlines()[1:] == ["going down"]


def test_trigger_refuses_a_flow_that_is_not_deployed(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote)
    before = git("--git-dir", str(bare_remote), "for-each-ref")
    proc = puppemon("trigger", "nosuch", cwd=repo, check=False)
    sha = git("--git-dir", str(bare_remote), "rev-parse", "--short=7", "flows").strip()
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f"Error: no flow 'nosuch' in the deployed flows (flows {sha} on origin: "
                           "hello, fails, slow); push it first\n")
    assert git("--git-dir", str(bare_remote), "for-each-ref") == before
    empty = tmp_path / "empty.git"
    git("init", "--bare", "--quiet", str(empty))
    proc = puppemon("trigger", "hello", "--remote", str(empty), cwd=repo, check=False)
    assert proc.stderr == f"Error: nothing is deployed on {empty} yet: run `puppemon push` first\n"


def test_request_for_an_unknown_flow_gets_a_failed_record(tmp_path, bare_remote):
    """A request the CLI would refuse (written through the library, as a race with a redeploy could)."""
    from datetime import datetime, timezone

    from puppemon.gitstore import Store
    from puppemon.history.requests import run_request, send
    from puppemon.project.snapshot import user_at_host as who

    repo = setup_project(tmp_path, bare_remote)
    body = run_request("nosuch", {}, who(), datetime.now(timezone.utc))
    send(Store.discover(repo), "origin", body)
    rid = body["id"]
    assert run_once(bare_remote, tmp_path / "state").returncode == 0
    [record] = records_for(bare_remote, rid)
    sha = git("--git-dir", str(bare_remote), "rev-parse", "--short=7", "flows").strip()
    assert record["flow"] == "nosuch" and record["status"] == "failed"
    assert record["error"] == (f"request {rid}: no flow 'nosuch' in the deployed flows commit {sha} "
                               "(flows: fails, hello, slow)")


@pytest.mark.slow
def test_each_request_is_served_once_across_restarts_and_daemons(tmp_path, bare_remote):
    repo = setup_project(tmp_path, bare_remote)
    first = [puppemon("trigger", "hello", "-p", f"n={n}", cwd=repo).stdout.strip() for n in range(2)]
    assert run_once(bare_remote, tmp_path / "s1").returncode == 0
    second = puppemon("trigger", "hello", "-p", "n=9", cwd=repo).stdout.strip()
    # a restart of the same daemon, then a second daemon with a state of its own
    assert run_once(bare_remote, tmp_path / "s1").returncode == 0
    assert run_once(bare_remote, tmp_path / "s2", name="d2").returncode == 0
    assert run_once(bare_remote, tmp_path / "s1").returncode == 0
    for rid in first + [second]:
        assert len(records_for(bare_remote, rid)) == 1, rid
    assert len(records(bare_remote)) == 3
    assert sorted(r["params"]["n"] for r in records(bare_remote)) == [0, 1, 9]


@pytest.mark.slow
def test_two_daemons_at_once_run_each_request_once(tmp_path, bare_remote, daemons):
    repo = setup_project(tmp_path, bare_remote)
    d1 = daemons(bare_remote, tmp_path / "s1", name="d1")
    d2 = daemons(bare_remote, tmp_path / "s2", name="d2")
    rids = [puppemon("trigger", "hello", "-p", f"n={n}", cwd=repo).stdout.strip() for n in range(6)]
    wait_until(lambda: all(records_for(bare_remote, r) for r in rids), 60, "6 runs",
               lambda: d1.log + d2.log)
    assert d1.stop() == 0 and d2.stop() == 0
    for rid in rids:
        [record] = records_for(bare_remote, rid)
        claim = remote_json(bare_remote, f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}.claim.json")
        assert (claim["daemon"], claim["run_id"]) == (record["daemon"], record["id"])
    assert len(records(bare_remote)) == 6
    git("--git-dir", str(bare_remote), "fsck", "--strict", "--no-dangling")


@pytest.mark.slow
def test_cancel_stops_a_long_run(tmp_path, bare_remote, daemons):
    repo = setup_project(tmp_path, bare_remote)
    d = daemons(bare_remote, tmp_path / "state")
    waiter = subprocess.Popen([sys.executable, "-m", "puppemon", "trigger", "slow", "--wait"], cwd=repo,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        rid = waiter.stdout.readline().strip()
        claim_path = f"requests/{rid[:4]}/{rid[4:6]}/{rid[6:8]}/{rid}.claim.json"
        wait_until(lambda: claim_path in remote_files(bare_remote) and "slow: started run" in d.log, 30,
                   "the run to start", lambda: d.log)
        run_id = remote_json(bare_remote, claim_path)["run_id"]
        assert run_id == rid  # the request's id is its run's
        wait_until(lambda: "running" in puppemon("logs", rid, "--fetch", cwd=repo).stderr, 15, "status")
        cid = json.loads(puppemon("cancel", run_id, "--json", cwd=repo).stdout)["cancel_request"]
        assert waiter.wait(30) == 130
    finally:
        waiter.kill()
    [record] = records_for(bare_remote, rid)
    assert (record["id"], record["status"], record["exit_code"]) == (run_id, "cancelled", 130)
    assert waiter.stdout.read() == "started\n"
    done = f"requests/{cid[:4]}/{cid[4:6]}/{cid[6:8]}/{cid}.done.json"
    wait_until(lambda: done in remote_files(bare_remote), 30, "the cancel to be marked done")
    assert {k: remote_json(bare_remote, done)[k] for k in ("request", "run_id", "daemon", "outcome")} == {
        "request": cid, "run_id": run_id, "daemon": "d1", "outcome": "cancelled"}
    # a cancel request of a run that already finished (as one written before the run ended would be) is
    # marked done with what happened; `puppemon cancel` itself refuses it (tests/test_ids.py)
    from datetime import datetime, timezone

    from puppemon.history.requests import cancel_request, send
    late = cancel_request(run_id, "someone", datetime.now(timezone.utc))
    send(Store.discover(repo), "origin", late)
    late_done = f"requests/{late['id'][:4]}/{late['id'][4:6]}/{late['id'][6:8]}/{late['id']}.done.json"
    wait_until(lambda: late_done in remote_files(bare_remote), 30, "the late cancel to be marked done")
    assert remote_json(bare_remote, late_done)["outcome"] == "already finished (cancelled)"
    assert d.stop() == 0


def test_cancel_with_nothing_recorded(project):
    proc = puppemon("cancel", "20261125", cwd=project, check=False)
    assert (proc.returncode, proc.stderr) == (1, "Error: no runs recorded yet\n")
