"""`puppemon run --record`: the run lands on the project's `runs` branch and goes to the remote."""
from __future__ import annotations

import getpass
import json
import re
import socket
from pathlib import Path

import pytest

from tests.conftest import git, make_repo, puppemon

MANIFEST = """\
version: 1
flows:
  hello:
    command: echo hello
  fails:
    command: "echo about to fail; exit 3"
"""

RECORDED = re.compile(r"^recorded run (\d{8}T\d{6}Z-[0-9a-f]{6}) on runs \((.*)\)$")


@pytest.fixture
def proj(tmp_path, bare_remote) -> Path:
    repo = make_repo(tmp_path / "proj", {"puppemon.yaml": MANIFEST})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    return repo


def recorded(proc) -> tuple[str, str]:
    """(run id, where) from the last stderr line."""
    match = RECORDED.match(proc.stderr.splitlines()[-1])
    assert match, proc.stderr
    return match.group(1), match.group(2)


def remote_run(bare: Path, run_id: str, flow: str = "hello") -> dict:
    path = f"runs/{flow}/{run_id[:4]}/{run_id[4:6]}/{run_id[6:8]}/{run_id}"
    return json.loads(git("--git-dir", str(bare), "show", f"runs:{path}/run.json"))


def test_record_and_push(proj, bare_remote):
    proc = puppemon("run", "hello", "--record", cwd=proj)
    assert proc.stdout == "hello\n"
    run_id, where = recorded(proc)
    assert where == "pushed to origin"
    record = remote_run(bare_remote, run_id)
    head = git("rev-parse", "HEAD", cwd=proj).strip()
    user = f"{getpass.getuser()}@{socket.gethostname()}"
    assert record["trigger"] == {"kind": "manual", "by": user, "code": "working tree"}
    assert (record["status"], record["exit_code"], record["flows_commit"], record["source_commit"]) == (
        "succeeded", 0, "", head)
    assert record["daemon"] == ""
    # the same commit on the local runs branch and the remote's
    assert git("rev-parse", "runs", cwd=proj) == git("--git-dir", str(bare_remote), "rev-parse", "runs")
    assert git("--git-dir", str(bare_remote), "log", "-1", "--format=%s", "runs").startswith(
        "hello: succeeded in ")
    assert f"(manual by {user})" in git("--git-dir", str(bare_remote), "log", "-1", "--format=%s", "runs")
    assert puppemon("logs", run_id, cwd=proj).stdout == "hello\n"
    git("--git-dir", str(bare_remote), "fsck", "--strict", "--no-dangling")


def test_exit_code_is_the_flows_and_the_record_says_failed(proj, bare_remote):
    proc = puppemon("run", "fails", "--record", cwd=proj, check=False)
    assert proc.returncode == 3
    run_id, where = recorded(proc)
    assert where == "pushed to origin"
    record = remote_run(bare_remote, run_id, "fails")
    assert (record["status"], record["exit_code"]) == ("failed", 3)


def test_no_push_keeps_it_local_until_the_next_publish(proj, bare_remote):
    first = puppemon("run", "hello", "--record", "--no-push", cwd=proj)
    first_id, where = recorded(first)
    assert where == "not pushed: --no-push; it goes out with the next publish"
    assert git("--git-dir", str(bare_remote), "for-each-ref", "refs/heads/runs") == ""
    assert git("log", "--format=%s", "runs", cwd=proj).startswith("hello: succeeded")
    second_id, where = recorded(puppemon("run", "hello", "--record", cwd=proj))
    assert where == "pushed to origin"
    assert remote_run(bare_remote, first_id)["id"] == first_id
    assert remote_run(bare_remote, second_id)["id"] == second_id


def test_unreachable_remote_keeps_the_record_and_the_exit_code(proj, bare_remote, tmp_path):
    gone = tmp_path / "moved-away.git"
    git("remote", "set-url", "origin", str(gone), cwd=proj)
    proc = puppemon("run", "fails", "--record", cwd=proj, check=False)
    assert proc.returncode == 3
    run_id, where = recorded(proc)
    assert where.startswith("not pushed: could not fetch from origin: ")
    assert where.endswith("; it goes out with the next publish")
    # the remote is back: the next recorded run publishes both
    git("remote", "set-url", "origin", str(bare_remote), cwd=proj)
    later_id, where = recorded(puppemon("run", "hello", "--record", cwd=proj))
    assert where == "pushed to origin"
    assert remote_run(bare_remote, run_id, "fails")["status"] == "failed"
    assert remote_run(bare_remote, later_id)["status"] == "succeeded"


def test_records_join_a_remote_runs_branch_that_moved(proj, bare_remote, tmp_path):
    other = make_repo(tmp_path / "other", {"puppemon.yaml": MANIFEST})
    git("remote", "add", "origin", str(bare_remote), cwd=other)
    a, _ = recorded(puppemon("run", "hello", "--record", "--no-push", cwd=proj))
    b, _ = recorded(puppemon("run", "hello", "--record", cwd=other))
    c, where = recorded(puppemon("run", "hello", "--record", "--remote", str(bare_remote), cwd=proj))
    assert where == f"pushed to {bare_remote}"
    ids = json.loads(puppemon("runs", "--json", cwd=proj).stdout)
    assert sorted(r["id"] for r in ids) == sorted([a, b, c])
    assert git("--git-dir", str(bare_remote), "rev-list", "--count", "--merges", "runs").strip() == "0"


def test_record_without_a_remote(tmp_path):
    repo = make_repo(tmp_path / "solo", {"puppemon.yaml": MANIFEST})
    _, where = recorded(puppemon("run", "hello", "--record", cwd=repo))
    assert where == "not pushed: the repository has no remote; pass --remote NAME|URL"
    assert git("log", "--format=%s", "runs", cwd=repo).startswith("hello: succeeded")


def test_record_outside_a_repository_fails_before_running(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "puppemon.yaml").write_text(MANIFEST)
    proc = puppemon("run", "hello", "--record", cwd=plain, check=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == f"Error: {plain} is not inside a git repository; run `git init` there first\n"
