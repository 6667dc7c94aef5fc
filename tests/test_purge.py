"""`puppemon prune --purge` / `--purge-run`: the history of runs and the archive refs rewritten without some
records and force-pushed with a lease, checked with the real git binary on real remotes."""
from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from bench.history import build
from bench.history import record as bench_record
from puppemon.formats import run_dir
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from puppemon.history.records import (
    RunContext,
    run_files,
    run_message,
    synthetic_record,
)
from puppemon.history.requests import request_files, request_message, run_request
from tests.conftest import git, make_repo, puppemon, wait_until
from tests.daemon_helpers import DaemonProcess, deploy, fsck, linear, manifest_project

T0 = datetime(2025, 3, 1, 8, 0, tzinfo=timezone.utc)


def triggered(recorder: Recorder, day: int, n: int, flow: str = "job", value: str | None = None) -> str:
    """A run request carrying `value` in its params, then the run's record (params included), as
    `trigger` and the daemon write them; return the run id."""
    when = T0 + timedelta(days=day, minutes=n)
    run_id = f"{when:%Y%m%dT%H%M%SZ}-c{n:05x}"
    params = {"token": value or f"value-{run_id}"}
    body = run_request(flow, params, "me@laptop", when, run_id)
    recorder.add(request_files(body), request_message(body))
    ctx = RunContext(run_id, flow, {"kind": "request", "by": "me@laptop"}, params=params, request=run_id)
    rec = synthetic_record(ctx, "succeeded", None, when, when + timedelta(seconds=3))
    recorder.add(run_files(rec, f"used {params['token']}\n".encode()), run_message(rec))
    return run_id


def gitb(bare: Path, *args: str) -> str:
    return git("--git-dir", str(bare), *args)


def paths_in_history(bare: Path, ref: str) -> set[str]:
    """Every path any commit of `ref` holds (git rev-list --objects names each blob and tree by its path)."""
    out = gitb(bare, "rev-list", "--objects", ref)
    return {line.split(" ", 1)[1] for line in out.splitlines() if " " in line}


def all_objects(bare: Path) -> bytes:
    """Every object of a repository once unreachable ones are gone, content included."""
    gitb(bare, "gc", "--prune=now", "--quiet")
    return subprocess.run(["git", "--git-dir", str(bare), "cat-file", "--batch-all-objects", "--batch"],
                          capture_output=True, check=True).stdout


def log_of(bare: Path, ref: str = "runs") -> list[str]:
    """Author, committer (with dates) and message of each commit, oldest first."""
    out = gitb(bare, "log", "--reverse", "--format=%an|%ae|%ad|%cn|%ce|%cd|%B%x00", "--date=raw", ref)
    return [entry.strip("\n") for entry in out.split("\0") if entry.strip("\n")]


def tip_runs(bare: Path, ref: str = "runs") -> list[str]:
    return sorted(p for p in gitb(bare, "ls-tree", "-r", "--name-only", ref).split() if p.endswith("/run.json"))


def archive(tmp_path: Path, bare: Path, month: str, run_ids: list[str], flow: str = "job") -> str:
    """An archive ref made with plain git: one commit per rotated day, records at their runs-branch paths."""
    work = make_repo(tmp_path / f"archiver-{month}", commit=False)
    for run_id in run_ids:
        d = work / run_dir(flow, run_id)
        d.mkdir(parents=True)
        (d / "run.json").write_text(json.dumps({"id": run_id, "params": {"token": f"archived-{run_id}"}}))
        (d / "log.txt").write_text("archived\n")
        git("add", "-A", cwd=work)
        git("commit", "--quiet", "-m", f"archive: {run_id[:8]}", cwd=work)
    git("push", "--quiet", str(bare), f"HEAD:refs/puppemon/archive/{month}", cwd=work)
    return gitb(bare, "rev-parse", f"refs/puppemon/archive/{month}").strip()


@pytest.fixture
def clone(tmp_path, bare_remote) -> Path:
    repo = make_repo(tmp_path / "clone", {"x": "x"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    return repo


def test_purge_before_rewrites_every_commit_and_the_remote_forgets_the_values(tmp_path, bare_remote, clone):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    old = [triggered(daemon, day, n) for n, day in enumerate([0, 1, 40])]     # 2025-03-01, 03-02, 04-10
    new = [triggered(daemon, day, n) for n, day in enumerate([92, 93], start=10)]  # June
    assert daemon.publish()
    archived = archive(tmp_path, bare_remote, "2025-03", old[:2])
    before_log, before_tip = log_of(bare_remote), gitb(bare_remote, "ls-tree", "-r", "runs").splitlines()

    dry = puppemon("prune", "--purge", "--before", "2025-04-01", "--dry-run", cwd=clone)
    assert dry.stdout == ("dry run: would purge 2 runs and 2 request/deploy/claim files from refs/heads/runs "
                          "(10 commits: 4 dropped, 6 rewritten) and refs/puppemon/archive/2025-03 (2 commits: "
                          "2 dropped, 0 rewritten) on origin\n")
    assert gitb(bare_remote, "rev-parse", "refs/puppemon/archive/2025-03").strip() == archived

    out = puppemon("prune", "--purge", "--before", "2025-04-01", "--yes", cwd=clone, input="")
    assert out.stdout == ("purged 2 runs and 2 request/deploy/claim files from every commit (force-pushed to "
                          "origin; other clones keep the old records until they fetch and gc)\n")
    purged = ("runs/job/2025/03/", "requests/2025/03/")
    # no commit holds a purged path; the tip is the old tip without them, blob for blob
    assert not [p for p in paths_in_history(bare_remote, "runs") if p.startswith(purged)]
    assert gitb(bare_remote, "ls-tree", "-r", "runs").splitlines() == [
        line for line in before_tip if not line.split("\t")[1].startswith(purged)]
    assert tip_runs(bare_remote) == sorted(f"{run_dir('job', r)}/run.json" for r in old[2:] + new)
    # the commits that wrote something else keep their authors, committers, dates and messages
    assert log_of(bare_remote) == [entry for entry in before_log
                                   if not any(r in entry for r in old[:2])]
    # the archive ref held only purged days: it is one empty commit now (fetches elsewhere update it)
    assert gitb(bare_remote, "ls-tree", "-r", "refs/puppemon/archive/2025-03") == ""
    assert gitb(bare_remote, "log", "--format=%s %P", "refs/puppemon/archive/2025-03") == (
        "purge: every record this ref held was purged \n")
    assert linear(bare_remote)
    fsck(bare_remote)
    git("fsck", "--strict", cwd=clone)
    objects = all_objects(bare_remote)
    assert not any(f"value-{r}".encode() in objects or f"archived-{r}".encode() in objects for r in old[:2])
    assert all(f"value-{r}".encode() in objects for r in old[2:] + new)
    assert json.loads(puppemon("runs", "--json", cwd=clone).stdout)[0]["id"] == new[-1]
    # the clone's own runs branch is the rewritten one
    assert git("rev-parse", "runs", cwd=clone) == gitb(bare_remote, "rev-parse", "runs")


def test_purge_run_takes_one_run_and_its_request_out_of_runs_and_the_archives(tmp_path, bare_remote, clone):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    ids = [triggered(daemon, 0, n) for n in range(4)]
    claim = {f"requests/2025/03/01/{ids[1]}.claim.json": b'{"daemon": "d1"}\n'}
    daemon.add(claim, "claim request\n")
    assert daemon.publish()
    archive(tmp_path, bare_remote, "2025-03", ids[:2])
    count = len(gitb(bare_remote, "rev-list", "runs").split())

    out = puppemon("prune", "--purge-run", ids[1], "--purge-run", ids[3], "--yes", cwd=clone, input="")
    assert out.stdout.startswith("purged 2 runs and 3 request/deploy/claim files from every commit")
    for ref in ("runs", "refs/puppemon/archive/2025-03"):
        assert not [p for p in paths_in_history(bare_remote, ref) if ids[1] in p or ids[3] in p]
    assert tip_runs(bare_remote) == sorted(f"{run_dir('job', r)}/run.json" for r in (ids[0], ids[2]))
    assert tip_runs(bare_remote, "refs/puppemon/archive/2025-03") == [f"{run_dir('job', ids[0])}/run.json"]
    assert len(gitb(bare_remote, "rev-list", "runs").split()) == count - 5   # their request, run and claim commits
    assert not [m for m in gitb(bare_remote, "log", "--format=%B", "--all").split("\n") if ids[1] in m]
    fsck(bare_remote)
    objects = all_objects(bare_remote)
    assert f"value-{ids[1]}".encode() not in objects and f"archived-{ids[1]}".encode() not in objects
    assert f"value-{ids[2]}".encode() in objects and f"archived-{ids[0]}".encode() in objects


def test_a_kept_commit_that_names_a_purged_run_loses_those_lines(tmp_path, bare_remote, clone):
    recorder = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    records = []
    for n in range(2):
        ctx = RunContext(f"20250301T08000{n}Z-d0000{n}", "job", {"kind": "schedule"}, params={"n": n})
        records.append(synthetic_record(ctx, "succeeded", None, T0))
    both = {**run_files(records[0]), **run_files(records[1])}
    message = (f"2 records\n\nPuppemon-Run: {records[0]['id']}\nPuppemon-Flow: job\n"
               f"Puppemon-Run: {records[1]['id']}\nPuppemon-Flow: job\n")
    recorder.add(both, message)
    assert recorder.publish()
    puppemon("prune", "--purge-run", records[0]["id"], "--yes", cwd=clone, input="")
    assert gitb(bare_remote, "log", "--format=%B", "runs") == (
        f"records (some purged)\n\nPuppemon-Flow: job\nPuppemon-Run: {records[1]['id']}\n"
        f"Puppemon-Flow: job\n\n")
    assert tip_runs(bare_remote) == [f"{run_dir('job', records[1]['id'])}/run.json"]


def test_purging_many_records_of_a_long_history(tmp_path, bare_remote, clone):
    """bench/history.py writes 3,000 runs (one every 5 minutes from 2025-01-01): purge the first 4 days."""
    build(bare_remote, 0, 3000)
    before = tip_runs(bare_remote)
    cutoff = "2025-01-05"
    kept = [p for p in before if p.split("/")[2:5] >= ["2025", "01", "05"]]
    assert 0 < len(kept) < len(before)
    out = puppemon("prune", "--purge", "--before", cutoff, "--yes", cwd=clone, input="").stdout
    assert out.startswith(f"purged {len(before) - len(kept)} runs from every commit")
    assert tip_runs(bare_remote) == kept
    assert len(gitb(bare_remote, "rev-list", "runs").split()) == len(kept)
    assert gitb(bare_remote, "log", "-1", "--format=%s%n%an %ad", "--date=raw", "runs~10") == (
        log_of_bench(len(before) - 11))
    fsck(bare_remote)


def log_of_bench(i: int) -> str:
    rec = bench_record(i)
    when = int(datetime.fromisoformat(rec["started"].replace("Z", "+00:00")).timestamp()) + 1
    return f"{rec['flow']}: succeeded in 1.0s (schedule)\npuppemon bench {when} +0000\n"


# -- refusals ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, error", [
    (["--purge"], ("--purge needs --before DATE (whole days before it are purged); to purge single runs use "
                  "--purge-run ID")),
    (["--purge-run", "last-tuesday"], ("--purge-run: 'last-tuesday' is not a run id (expected e.g. "
                                      "20261125T083000Z-7f3a9c)")),
    (["--purge-run", "20250301T080000Z-aaaaaa/../x"], ("--purge-run: '20250301T080000Z-aaaaaa/../x' is not a "
                                                      "run id (expected e.g. 20261125T083000Z-7f3a9c)")),
    (["--purge-run", "20250301T080000Z-aaaaaa", "--yes"], ("no record of run 20250301T080000Z-aaaaaa on origin: "
                                                          "nothing purged (list runs with `puppemon runs`)")),
    (["--purge", "--before", "2025-04-01", "--no-fetch"], ("a purge always fetches and pushes: it rewrites what "
                                                          "the remote holds (drop --no-fetch and --no-push)")),
    (["--purge", "--before", "2999-01-01"], ("--before '2999-01-01' is in the future; nothing recorded yet could "
                                            "be that old")),
    (["--purge", "--before", "2025-04-01"], ("a purge rewrites history for good: confirm it at a terminal, or "
                                            "pass --yes")),
    (["--before", "30d", "--yes"], "--yes confirms a purge: use it with --purge or --purge-run"),
    ([], "prune needs --before DATE|DURATION (e.g. --before 90d)"),
])
def test_bad_input_is_one_line(tmp_path, bare_remote, clone, args, error):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    triggered(daemon, 0, 0)
    assert daemon.publish()
    tip = gitb(bare_remote, "rev-parse", "runs")
    proc = puppemon("prune", *args, cwd=clone, check=False, input="")
    assert (proc.returncode, proc.stderr) == (1, f"Error: {error}\n")
    assert gitb(bare_remote, "rev-parse", "runs") == tip


def test_nothing_to_purge(tmp_path, bare_remote, clone):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    triggered(daemon, 30, 0)
    assert daemon.publish()
    out = puppemon("prune", "--purge", "--before", "2025-03-01", "--yes", cwd=clone, input="")
    assert out.stdout == "nothing to purge: no records from before 2025-03-01 in any commit\n"


def status_ref(bare: Path, name: str, heartbeat: datetime, state: str = "running") -> None:
    """A daemon's status ref, written with plain git."""
    status = json.dumps({"schema": 1, "name": name, "host": "server", "pid": 1, "version": "0.1.0",
                         "state": state, "heartbeat": heartbeat.strftime("%Y-%m-%dT%H:%M:%S.000Z")})
    blob = subprocess.run(["git", "--git-dir", str(bare), "hash-object", "-w", "--stdin"], input=status.encode(),
                          capture_output=True, check=True).stdout.decode().strip()
    tree = subprocess.run(["git", "--git-dir", str(bare), "mktree"], input=f"100644 blob {blob}\tstatus.json\n",
                          capture_output=True, text=True, check=True).stdout.strip()
    commit = gitb(bare, "commit-tree", tree, "-m", f"status of {name}").strip()
    gitb(bare, "update-ref", f"refs/puppemon/status/{name}", commit)


def test_a_heartbeat_refuses_and_a_stale_or_stopped_one_does_not(tmp_path, bare_remote, clone):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    run_id, other = triggered(daemon, 0, 0), triggered(daemon, 0, 1)
    assert daemon.publish()
    now = datetime.now(timezone.utc)
    status_ref(bare_remote, "box", now - timedelta(seconds=20))
    status_ref(bare_remote, "gone", now - timedelta(minutes=10))
    status_ref(bare_remote, "done", now - timedelta(seconds=5), state="stopped")
    proc = puppemon("prune", "--purge-run", run_id, "--yes", cwd=clone, check=False, input="")
    assert (proc.returncode, proc.stderr) == (
        1, ("Error: 1 daemon (box) still heartbeat on origin: stop them before purging (a daemon known to be "
           "dead stops counting 3 minutes after its last heartbeat)\n"))
    status_ref(bare_remote, "box", now - timedelta(minutes=4))
    puppemon("prune", "--purge-run", run_id, "--yes", cwd=clone, input="")
    assert tip_runs(bare_remote) == [f"{run_dir('job', other)}/run.json"]


@pytest.mark.slow
def test_a_real_daemon_refuses_the_purge_and_after_it_carries_on(tmp_path, bare_remote):
    manifest = "version: 1\nflows:\n  hello:\n    command: echo hi\n    run_on_deploy: true\n"
    repo = manifest_project(tmp_path, str(bare_remote), manifest)
    deploy(repo)
    state = tmp_path / "state"
    with DaemonProcess(str(bare_remote), state) as d:
        wait_until(lambda: tip_runs(bare_remote) if gitb(bare_remote, "for-each-ref", "refs/heads/runs") else [],
                   what="the on-deploy run on the remote", on_fail=lambda: d.log)
        (first,) = [p.split("/")[-2] for p in tip_runs(bare_remote)]
        wait_until(lambda: gitb(bare_remote, "for-each-ref", "refs/puppemon/status/"), what="a status ref")
        proc = puppemon("prune", "--purge-run", first, "--yes", cwd=repo, check=False, input="")
        assert proc.returncode == 1 and proc.stderr.startswith("Error: 1 daemon (d1) still heartbeat on origin")
        assert d.stop() == 0
    puppemon("prune", "--purge-run", first, "--yes", cwd=repo, input="")
    assert not [p for p in paths_in_history(bare_remote, "runs") if first in p]
    deploy(repo, manifest.replace("echo hi", "echo again"))
    with DaemonProcess(str(bare_remote), state) as d:
        wait_until(lambda: tip_runs(bare_remote), what="the next on-deploy run", on_fail=lambda: d.log)
        assert d.stop() == 0
    assert first not in " ".join(paths_in_history(bare_remote, "runs"))
    assert len(tip_runs(bare_remote)) == 1 and linear(bare_remote)
    fsck(bare_remote)


def test_the_lease_keeps_a_record_pushed_while_the_purge_asked(tmp_path, bare_remote, clone):
    """The prompt is the seam: a daemon pushes a record while the user reads it; the push is refused."""
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    ids = [triggered(daemon, 0, n) for n in range(2)]
    assert daemon.publish()
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "prune", "--purge-run", ids[0]], cwd=clone,
                            stdin=slave, stdout=slave, stderr=slave, env=os.environ.copy())
    os.close(slave)
    seen = bytearray()

    def read() -> bytes:
        while select.select([master], [], [], 0.05)[0]:
            try:
                seen.extend(os.read(master, 4096))
            except OSError:
                break
        return bytes(seen)

    try:
        wait_until(lambda: b"[y/N]" in read(), what="the confirmation", on_fail=lambda: seen.decode())
        assert seen.decode().replace("\r\n", "\n").startswith(
            "Rewrite refs/heads/runs (4 commits: 2 dropped, 2 rewritten) on origin, taking 1 run and 1 "
            "request/deploy/claim file out of every commit for good, and force-push? [y/N]")
        late = triggered(daemon, 0, 9)
        assert daemon.publish()
        tip = gitb(bare_remote, "rev-parse", "runs")
        os.write(master, b"y\n")
        assert proc.wait(60) == 1
        read()
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    assert seen.decode().rstrip().endswith(
        "Error: origin changed while purging (a record was pushed meanwhile): nothing was rewritten, there or "
        "here; run the purge again")
    assert gitb(bare_remote, "rev-parse", "runs") == tip
    assert any(ids[0] in p for p in paths_in_history(bare_remote, "runs"))
    assert any(late in p for p in paths_in_history(bare_remote, "runs"))
    assert git("for-each-ref", "refs/puppemon/purging/", "refs/puppemon/rewriting/", cwd=clone) == ""
    # the next purge sees the late record and keeps it
    puppemon("prune", "--purge-run", ids[0], "--yes", cwd=clone, input="")
    assert tip_runs(bare_remote) == sorted(f"{run_dir('job', r)}/run.json" for r in (ids[1], late))


def test_a_no_answer_changes_nothing(tmp_path, bare_remote, clone):
    daemon = Recorder(Store.open_or_init_bare(tmp_path / "daemon.git"), remote=str(bare_remote))
    run_id = triggered(daemon, 0, 0)
    assert daemon.publish()
    tip = gitb(bare_remote, "rev-parse", "runs")
    from puppemon.commands.purge import run_purge
    questions = []
    code = run_purge(None, (run_id,), None, False, False, str(clone),
                     ask=lambda q: questions.append(q) or "n")
    assert code == 1 and questions and gitb(bare_remote, "rev-parse", "runs") == tip



def test_a_repository_without_a_remote_is_purged_in_place(tmp_path):
    repo = make_repo(tmp_path / "alone", {"x": "x"})
    recorder = Recorder(Store.discover(repo))
    ids = [triggered(recorder, 0, n) for n in range(2)]
    archive(tmp_path, repo / ".git", "2025-03", ids)
    out = puppemon("prune", "--purge-run", ids[0], "--yes", cwd=repo, input="").stdout
    assert out == "purged 1 run and 1 request/deploy/claim file from every commit\n"
    for ref in ("runs", "refs/puppemon/archive/2025-03"):
        assert not [p for p in paths_in_history(repo / ".git", ref) if ids[0] in p]
        assert tip_runs(repo / ".git", ref) == [f"{run_dir('job', ids[1])}/run.json"]
    git("fsck", "--strict", cwd=repo)
