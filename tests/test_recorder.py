"""The recorder and the runs branch, checked with the real git binary."""
from __future__ import annotations

import json
import shutil
import threading
from datetime import datetime, timedelta, timezone

import pytest

from puppemon.gitstore import Store
from puppemon.formats import run_dir
from puppemon.history.records import RunContext, RunStore, run_files, run_message, synthetic_record
from puppemon.history.recorder import Recorder
from tests.conftest import git

T0 = datetime(2026, 11, 25, 8, 30, tzinfo=timezone.utc)


def make_record(flow: str, n: int, status: str = "succeeded", suffix: str = "a") -> dict:
    started = T0 + timedelta(minutes=n)
    run_id = f"{started:%Y%m%dT%H%M%SZ}-{suffix}{n:05x}"
    return synthetic_record(RunContext(run_id, flow, {"kind": "schedule"}), status, None, started,
                            started + timedelta(seconds=2))


def record(recorder: Recorder, rec: dict, log: bytes = b"log\n") -> str:
    return recorder.add(run_files(rec, log), run_message(rec))


def fsck(path) -> None:
    git("--git-dir", str(path), "fsck", "--strict", "--no-dangling")


@pytest.fixture
def local(tmp_path) -> Store:
    return Store.open_or_init_bare(tmp_path / "local.git")


def test_record_layout_message_and_fsck(local):
    recorder = Recorder(local)
    rec = make_record("backup", 1, status="failed")
    sha = record(recorder, rec, b"boom\n")
    d = run_dir("backup", rec["id"])
    assert d == f"runs/backup/2026/11/25/{rec['id']}"
    files = git("--git-dir", str(local.git_dir), "ls-tree", "-r", "--name-only", "runs").split()
    assert files == [f"{d}/log.txt", f"{d}/run.json"]
    assert json.loads(git("--git-dir", str(local.git_dir), "show", f"runs:{d}/run.json")) == rec
    assert git("--git-dir", str(local.git_dir), "log", "-1", "--format=%B", sha) == (
        f"backup: failed in 2.0s (schedule)\n\nPuppemon-Run: {rec['id']}\nPuppemon-Flow: backup\n"
        "Puppemon-Status: failed\n\n")
    fsck(local.git_dir)


def test_plain_git_queries_work(local, bare_remote):
    recorder = Recorder(local, remote=str(bare_remote))
    for n in range(6):
        record(recorder, make_record("a" if n % 2 else "b", n, "failed" if n % 3 == 0 else "succeeded"))
    assert recorder.publish()
    failed = git("--git-dir", str(bare_remote), "log", "runs", "--format=%s",
                 "--grep", "Puppemon-Status: failed").splitlines()
    assert failed == ["a: failed in 2.0s (schedule)", "b: failed in 2.0s (schedule)"]
    only_a = git("--git-dir", str(bare_remote), "log", "runs", "--format=%s", "--", "runs/a").splitlines()
    assert len(only_a) == 3 and all(s.startswith("a: ") for s in only_a)
    fsck(bare_remote)


def test_one_record_rewrites_only_its_own_path(local):
    recorder = Recorder(local)
    record(recorder, make_record("a", 1))
    before = local.lookup(local.ref("refs/heads/runs"), "runs/a").oid
    record(recorder, make_record("b", 2))
    assert local.lookup(local.ref("refs/heads/runs"), "runs/a").oid == before  # untouched subtree is shared


def test_records_wait_while_remote_is_down_and_arrive_later(local, bare_remote, tmp_path):
    recorder = Recorder(local, remote=str(bare_remote), sleep=lambda s: None)
    record(recorder, make_record("a", 1))
    assert recorder.publish()
    hidden = tmp_path / "hidden.git"
    shutil.move(bare_remote, hidden)
    for n in range(2, 5):
        record(recorder, make_record("a", n))
        assert not recorder.publish()
    assert recorder.unpublished() == 3
    shutil.move(hidden, bare_remote)
    assert recorder.publish()
    assert recorder.unpublished() == 0
    assert git("--git-dir", str(bare_remote), "rev-list", "--count", "runs").strip() == "4"
    fsck(bare_remote)


def test_two_writers_race_nothing_lost_history_linear(tmp_path, bare_remote):
    stores = [Store.open_or_init_bare(tmp_path / f"w{i}.git") for i in range(2)]
    recorders = [Recorder(s, remote=str(bare_remote)) for s in stores]
    errors = []

    def writer(i: int) -> None:
        try:
            for n in range(8):
                record(recorders[i], make_record(f"flow{i}", n, suffix="ab"[i]))
                recorders[i].sync()
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    parents = git("--git-dir", str(bare_remote), "log", "--format=%P", "runs").splitlines()
    assert len(parents) == 16 and all(len(p.split()) <= 1 for p in parents)
    ids = git("--git-dir", str(bare_remote), "log", "--format=%(trailers:key=Puppemon-Run,valueonly)", "runs")
    assert len(set(ids.split())) == 16
    runs = RunStore(Store(bare_remote))
    assert len(runs.list()) == 16
    fsck(bare_remote)


def test_replay_onto_moved_remote_keeps_author_and_message(tmp_path, bare_remote):
    a = Recorder(Store.open_or_init_bare(tmp_path / "a.git"), remote=str(bare_remote))
    b = Recorder(Store.open_or_init_bare(tmp_path / "b.git"), remote=str(bare_remote))
    record(a, make_record("x", 1, suffix="a"))
    record(b, make_record("y", 2, suffix="b"))
    assert a.publish() and b.publish()
    log = git("--git-dir", str(bare_remote), "log", "--format=%s|%an", "runs").splitlines()
    assert log == ["y: succeeded in 2.0s (schedule)|puppemon", "x: succeeded in 2.0s (schedule)|puppemon"]
    # after a sync, the first writer's local branch contains the second's record too
    a.sync()
    assert a.store.ref("refs/heads/runs") == Store(bare_remote).ref("refs/heads/runs")


def test_runstore_list_filters_and_find(local):
    recorder = Recorder(local)
    recs = [make_record("a" if n % 2 else "b", n, "failed" if n == 3 else "succeeded") for n in range(10)]
    for rec in recs:
        record(recorder, rec)
    runs = RunStore(local)
    assert [r["id"] for r in runs.list(limit=3)] == [recs[9]["id"], recs[8]["id"], recs[7]["id"]]
    assert [r["id"] for r in runs.list(flow="a", limit=2)] == [recs[9]["id"], recs[7]["id"]]
    assert [r["id"] for r in runs.list(status="failed")] == [recs[3]["id"]]
    assert [r["id"] for r in runs.list(since=T0 + timedelta(minutes=8))] == [recs[9]["id"], recs[8]["id"]]
    assert runs.find(recs[4]["id"])["flow"] == "b"
    assert runs.find(recs[4]["id"].split("-")[1])["id"] == recs[4]["id"]  # by random suffix
    with pytest.raises(Exception, match="matches 10 runs"):
        runs.find("20261125")
    with pytest.raises(Exception, match="no run with id"):
        runs.find("20991231T000000Z")
    assert runs.read_file(recs[4], "log.txt") == b"log\n"


def test_unpublished_counts_and_the_fork_agree_with_git_however_far_the_two_sides_moved(tmp_path, bare_remote):
    """The fork of the local and the remote runs is found by walking first parents (no libgit2 merge base):
    checked against `git merge-base` and `git rev-list --count` with each side ahead by 0 to 3 records."""
    mine = Recorder(Store.open_or_init_bare(tmp_path / "mine.git"), remote=str(bare_remote))
    theirs = Recorder(Store.open_or_init_bare(tmp_path / "theirs.git"), remote=str(bare_remote))
    record(mine, make_record("hello", n := 0))
    assert mine.publish()
    for ahead, behind in [(1, 0), (0, 2), (3, 0), (2, 3), (0, 0), (1, 1)]:
        for _ in range(behind):
            record(theirs, make_record("other", n := n + 1))
            assert theirs.publish()
        for _ in range(ahead):
            record(mine, make_record("hello", n := n + 1))
        mine.fetch()
        local, remote = mine.store.ref(mine.ref), mine.store.ref(mine.tracking)
        where = ("--git-dir", str(mine.store.git_dir))
        assert mine.unpublished() == int(git(*where, "rev-list", "--count", f"{remote}..{local}"))
        assert mine._merge_base(local, remote) == git(*where, "merge-base", local, remote).strip()
        assert mine.publish()
        assert mine.unpublished() == 0
    fsck(bare_remote)
