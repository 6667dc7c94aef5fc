"""Retention: `puppemon prune` takes old records out of the tip; history keeps every one."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

from puppemon.gitstore import Store
from puppemon.history.records import RunContext, run_files, run_message, synthetic_record
from puppemon.history.recorder import Recorder
from tests.conftest import git, make_repo, puppemon

NOW = datetime.now(timezone.utc).replace(microsecond=0)


def seed(store: Store, remote: str, days_ago: list[int], flow: str = "job", suffix: str = "a") -> list[dict]:
    recorder = Recorder(store, remote=remote)
    records = []
    for n, ago in enumerate(days_ago):
        started = NOW - timedelta(days=ago, seconds=n)
        ctx = RunContext(f"{started:%Y%m%dT%H%M%SZ}-{suffix}{n:05x}", flow, {"kind": "schedule"})
        rec = synthetic_record(ctx, "succeeded", None, started)
        recorder.add(run_files(rec, b"log\n"), run_message(rec))
        records.append(rec)
    assert recorder.publish()
    return records


def tip_files(bare) -> list[str]:
    return git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs").split()


def test_prune_removes_old_days_from_the_tip_and_history_keeps_them(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "p", {"x": "x"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    old = seed(Store(bare_remote), str(bare_remote), [40, 35, 31])
    new = seed(Store(bare_remote), str(bare_remote), [2, 0], suffix="b")
    before = git("--git-dir", str(bare_remote), "rev-parse", "runs").strip()

    dry = puppemon("prune", "--before", "30d", "--dry-run", cwd=repo)
    cutoff = (NOW - timedelta(days=30)).date().isoformat()
    assert dry.stdout == f"dry run: would prune 3 runs from before {cutoff}\n"
    assert git("--git-dir", str(bare_remote), "rev-parse", "runs").strip() == before

    out = puppemon("prune", "--before", "30d", cwd=repo).stdout
    assert out == f"pruned 3 runs from before {cutoff} (pushed to origin); `git log runs` still has them\n"
    files = tip_files(bare_remote)
    assert not any(r["id"] in f for r in old for f in files)
    assert all(any(r["id"] in f for f in files) for r in new)
    # one ordinary commit on top: nothing rewritten, every old record still readable
    assert git("--git-dir", str(bare_remote), "rev-parse", "runs~1").strip() == before
    assert git("--git-dir", str(bare_remote), "log", "-1", "--format=%s", "runs") == (
        f"prune: 3 runs from before {cutoff} (still in history)\n")
    path = f"runs/job/{old[0]['id'][:4]}/{old[0]['id'][4:6]}/{old[0]['id'][6:8]}/{old[0]['id']}/run.json"
    assert json.loads(git("--git-dir", str(bare_remote), "show", f"{before}:{path}"))["id"] == old[0]["id"]
    git("--git-dir", str(bare_remote), "fsck", "--strict", "--no-dangling")
    listed = json.loads(puppemon("runs", "--json", cwd=repo).stdout)
    assert [r["id"] for r in listed] == [r["id"] for r in reversed(new)]
    assert puppemon("prune", "--before", "30d", cwd=repo).stdout == f"nothing to prune: no records from before {cutoff}\n"


def test_a_prune_replays_onto_records_written_meanwhile(tmp_path, bare_remote):
    """A daemon publishes while the prune is local only: both end up on the remote, linear."""
    repo = make_repo(tmp_path / "p", {"x": "x"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    seed(Store(bare_remote), str(bare_remote), [50, 45])
    puppemon("prune", "--before", "30d", "--no-push", cwd=repo)
    daemon = Store.open_or_init_bare(tmp_path / "daemon.git")
    fresh = seed(daemon, str(bare_remote), [0], suffix="c")
    assert puppemon("runs", "--json", cwd=repo).returncode == 0  # fetches and replays the prune on top
    Recorder(Store.discover(repo), remote="origin").sync()
    files = tip_files(bare_remote)
    assert [f for f in files if f.endswith("run.json")] == [
        f"runs/job/{fresh[0]['id'][:4]}/{fresh[0]['id'][4:6]}/{fresh[0]['id'][6:8]}/{fresh[0]['id']}/run.json"]
    parents = git("--git-dir", str(bare_remote), "log", "--format=%P", "runs").splitlines()
    assert all(len(p.split()) <= 1 for p in parents)


def test_prune_refuses_a_future_date(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "p", {"x": "x"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    proc = puppemon("prune", "--before", "2999-01-01", cwd=repo, check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: --before '2999-01-01' is in the future; nothing recorded yet could be that old\n")


def test_daemon_keep_prunes_old_days_from_the_tip(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "p", {"puppemon.yaml": "version: 1\nflows:\n  job:\n    command: [\"true\"]\n"
                                                        "    run_on_deploy: true\n"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    puppemon("push", cwd=repo)
    old = seed(Store(bare_remote), str(bare_remote), [100, 95])
    proc = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "state"), "--once",
                    "--keep", "30d", check=False)
    assert proc.returncode == 0, proc.stderr
    cutoff = (NOW - timedelta(days=30)).date().isoformat()
    assert f"pruned 2 runs from before {cutoff} from the runs tip (--keep; still in history)" in proc.stderr
    files = tip_files(bare_remote)
    assert not any(r["id"] in f for r in old for f in files)
    assert len([f for f in files if f.endswith("run.json")]) == 1  # today's run_on_deploy run stays
    git("--git-dir", str(bare_remote), "fsck", "--strict", "--no-dangling")


def test_keep_below_a_day_is_refused(tmp_path, bare_remote):
    proc = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "s"), "--once",
                    "--keep", "5h", check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: --keep 5h: keep at least 1d (records are pruned by whole days)\n")
