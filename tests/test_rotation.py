"""Rotation of closed days out of the runs tip into archive refs: every record stays reachable from a
ref's tip, nothing is forced, and the readers find rotated runs as if they were on the tip."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

from bench import history
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from puppemon.history.records import find_record, run_files, run_message
from puppemon.history.rotation import archived, merged, plan, rotate, update_archives
from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import fsck, linear, run_daemon_once

COUNT = 9_000          # one run every 5 minutes from 2025-01-01: January and the first days of February
PER_DAY = 24 * 12
MANIFEST = 'version: 1\nflows:\n  today:\n    command: ["true"]\n    run_on_deploy: true\n'
ARCHIVES = "refs/puppemon/archive/*:refs/puppemon/archive/*"


def strict(remote: Path) -> Path:
    """A remote that refuses every forced update and every deletion: the oracle for "nothing is forced"."""
    git("--git-dir", str(remote), "config", "receive.denyNonFastForwards", "true")
    git("--git-dir", str(remote), "config", "receive.denyDeletes", "true")
    return remote


def records_in(remote: Path, ref: str) -> set[str]:
    names = git("--git-dir", str(remote), "ls-tree", "-r", "--name-only", ref, "--", "runs").split()
    return {name.split("/")[-2] for name in names if name.endswith("/run.json")}


def archives(remote: Path) -> list[str]:
    return git("--git-dir", str(remote), "for-each-ref", "--format=%(refname)", "refs/puppemon/archive").split()


def project(tmp_path: Path, remote: Path) -> Path:
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": MANIFEST})
    git("remote", "add", "origin", str(remote), cwd=repo)
    puppemon("push", cwd=repo)
    return repo


def old_ids(start: int, count: int) -> set[str]:
    return {history.record(i)["id"] for i in range(start, start + count)}


def test_a_daemon_rotates_closed_days_into_month_archives_and_every_record_stays(tmp_path, bare_remote):
    remote = strict(bare_remote)
    history.build(remote, 0, COUNT)
    repo = project(tmp_path, remote)
    before = git("--git-dir", str(remote), "rev-parse", "runs").strip()

    result = run_daemon_once(str(remote), tmp_path / "state")
    assert result.returncode == 0, result.stderr
    days = len({i * 5 // (24 * 60) for i in range(COUNT)}) * history.FLOWS
    assert f"rotated {COUNT} runs of {days} closed day directories (2025-01, 2025-02)" in result.stderr
    assert archives(remote) == ["refs/puppemon/archive/2025-01", "refs/puppemon/archive/2025-02"]
    tip, january, february = (records_in(remote, ref) for ref in ("runs", *archives(remote)))
    assert len(tip) == 1 and not tip & old_ids(0, COUNT)   # today's run only
    assert january | february == old_ids(0, COUNT) and not january & february
    assert all(rid.startswith("202501") for rid in january) and all(rid.startswith("202502") for rid in february)
    # Plain git reads an archive; the runs branch went on by ordinary commits, its history holds everything.
    one = history.record(4321)
    path = f"runs/{one['flow']}/2025/01/16/{one['id']}/run.json"
    assert json.loads(git("--git-dir", str(remote), "show", f"refs/puppemon/archive/2025-01:{path}"))["id"] == one["id"]
    git("--git-dir", str(remote), "merge-base", "--is-ancestor", before, "runs")  # fails unless an ancestor
    rotation = git("--git-dir", str(remote), "log", "--format=%B", "--grep", "^rotate:", "runs")
    assert "Puppemon-Rotated-To: refs/puppemon/archive/2025-01 refs/puppemon/archive/2025-02" in rotation
    assert linear(remote)
    fsck(remote)

    # A second cycle has nothing more to rotate: the tip holds today's records only.
    again = run_daemon_once(str(remote), tmp_path / "state")
    assert again.returncode == 0 and "rotated" not in again.stderr
    assert len(git("--git-dir", str(remote), "log", "--format=%H", "refs/puppemon/archive/2025-01").split()) == 1

    # The readers find rotated runs as if they were on the tip.
    day = sorted(i for i in range(COUNT) if history.record(i)["id"].startswith("20250110")
                 and history.record(i)["flow"] == "flow-3")
    listed = json.loads(puppemon("runs", "flow-3", "--since", "2025-01-10", "--until", "2025-01-11", "-n", "500",
                                 "--json", cwd=repo).stdout)
    assert [r["id"] for r in listed] == [history.record(i)["id"] for i in reversed(day)]
    assert puppemon("logs", one["id"], cwd=repo).stdout == history.LOG.decode()
    newest = json.loads(puppemon("runs", "-n", "3", "--json", cwd=repo).stdout)
    assert newest[0]["flow"] == "today"
    assert [r["id"] for r in newest[1:]] == [history.record(i)["id"] for i in (COUNT - 1, COUNT - 2)]
    old = json.loads(puppemon("runs", "--until", "2025-01-01T00:10", "--json", cwd=repo).stdout)
    assert [r["id"] for r in old] == [history.record(i)["id"] for i in (1, 0)]


def test_records_written_into_a_rotated_day_follow_it_and_prune_reaches_the_archives(tmp_path, bare_remote):
    remote = strict(bare_remote)
    history.build(remote, 0, 3 * PER_DAY)   # 2025-01-01 .. 03
    repo = project(tmp_path, remote)
    assert run_daemon_once(str(remote), tmp_path / "state").returncode == 0
    [archive] = archives(remote)

    # A run that started on 2025-01-02 and was recorded after its day rotated lands on the tip again.
    late = {**history.record(PER_DAY + 5), "id": "20250102T235959Z-1a7e00", "flow": "flow-5"}
    store = Store(tmp_path / "project")
    recorder = Recorder(store, remote="origin")
    recorder.add(run_files(late, b"late\n"), run_message(late))
    assert recorder.publish()
    assert late["id"] in records_in(remote, "runs")
    mirror = Store(tmp_path / "state" / "mirror.git")
    mirror_recorder = Recorder(mirror, remote=str(remote))
    mirror_recorder.sync(push=False)
    assert rotate(mirror, mirror_recorder, datetime.now(timezone.utc), rotate_after=1) is not None
    assert mirror_recorder.publish()
    assert late["id"] not in records_in(remote, "runs")
    assert records_in(remote, archive) == old_ids(0, 3 * PER_DAY) | {late["id"]}
    assert find_record(mirror, mirror.ref("refs/heads/runs"), late["id"])["flow"] == "flow-5"

    # prune takes the days before the cutoff out of the archive's tip too; its history keeps them.
    dry = puppemon("prune", "--before", "2025-01-03", "--dry-run", cwd=repo)
    assert dry.stdout == f"dry run: would prune {2 * PER_DAY + 1} runs from before 2025-01-03 from archive refs\n"
    done = puppemon("prune", "--before", "2025-01-03", cwd=repo)
    assert done.stdout.startswith(f"pruned {2 * PER_DAY + 1} runs from before 2025-01-03 from archive refs")
    assert records_in(remote, archive) == old_ids(2 * PER_DAY, PER_DAY)
    assert records_in(remote, f"{archive}~1") == old_ids(0, 3 * PER_DAY) | {late["id"]}
    assert json.loads(puppemon("runs", "--until", "2025-01-03", "--json", cwd=repo).stdout) == []
    assert linear(remote)
    fsck(remote)


def test_two_daemons_rotating_at_once_converge_and_lose_nothing(tmp_path, bare_remote):
    remote = strict(bare_remote)
    history.build(remote, 0, 4 * PER_DAY)
    mirrors = []
    for name in ("a", "b"):
        store = Store.open_or_init_bare(tmp_path / name)
        recorder = Recorder(store, remote=str(remote), author_name=f"puppemon {name}")
        recorder.sync(push=False)
        mirrors.append((store, recorder))
    (a, rec_a), (b, rec_b) = mirrors
    now = datetime.now(timezone.utc)
    # Both planned on the same tip; a rotates and publishes first, b's archive push is refused, b merges.
    assert rotate(a, rec_a, now) is not None and rec_a.publish()
    assert rotate(b, rec_b, now) is not None and rec_b.publish()
    [archive] = archives(remote)
    assert records_in(remote, archive) == old_ids(0, 4 * PER_DAY)
    assert records_in(remote, "runs") == set()
    assert len(git("--git-dir", str(remote), "log", "--format=%H", archive).split()) == 1
    assert b.ref(archive) == a.ref(archive)
    assert linear(remote)
    fsck(remote)


def test_rotate_after_is_checked(tmp_path, bare_remote):
    for value, shown in (("0", "0"), ("many", "'many'")):
        proc = puppemon("daemon", "--remote", str(bare_remote), "--state", str(tmp_path / "s"), "--once",
                        "--rotate-after", value, check=False)
        assert proc.returncode == 2 and "--rotate-after" in proc.stderr and "Traceback" not in proc.stderr, shown
    config = tmp_path / "daemon.yaml"
    config.write_text(f"remote: {bare_remote}\nrotate_after: lots\n")
    proc = puppemon("daemon", "--config", str(config), "--state", str(tmp_path / "s"), "--once", check=False)
    assert (proc.returncode, proc.stderr) == (
        1, "Error: --rotate-after 'lots': expected a whole number of records, at least 1\n")


def test_a_record_written_into_a_day_while_it_rotates_stays_on_the_tip(tmp_path):
    store = Store.open_or_init_bare(tmp_path / "mirror.git")
    recorder = Recorder(store)
    for i in range(PER_DAY + 10):   # 2025-01-01 and the first minutes of the 2nd
        recorder.add(*history.files_and_message(i))
    rotation = plan(store, store.ref(recorder.ref), datetime(2025, 1, 2, 1, tzinfo=timezone.utc), rotate_after=1)
    assert rotation.runs == PER_DAY and set(rotation.moves) == {"refs/puppemon/archive/2025-01"}
    assert update_archives(store, None, {ref: lambda tree, p=paths: merged(store, tree, rotation.tip, p)
                                         for ref, paths in rotation.moves.items()}, {ref: "archive" for ref in rotation.moves})
    # Between the archive and the removal, the daemon records a run that started on the 1st.
    late = {**history.record(3), "id": "20250101T235959Z-1a7e00"}
    recorder.add(run_files(late, b"late\n"), run_message(late))
    recorder.add(lambda current: archived(store, rotation.tip, current, rotation.paths), "rotate")
    tip = store.ref(recorder.ref)
    on_tip = {e.name for p in rotation.paths for e in store.listdir(tip, p)}
    assert on_tip == {late["id"]}
    assert {e.name for p in rotation.paths for e in store.listdir(store.ref("refs/puppemon/archive/2025-01"), p)} | {
        late["id"]} == old_ids(0, PER_DAY) | {late["id"]}
    assert store.listdir(tip, "runs/flow-0/2025/01/02")   # today stays
