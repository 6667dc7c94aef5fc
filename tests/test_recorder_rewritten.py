"""A recorder (a daemon's mirror, a user's clone) after the remote's runs history was rewritten by a purge:
what was purged stays purged, records it had not pushed yet still go out."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from puppemon.formats import run_dir
from puppemon.gitstore import Store
from puppemon.history.recorder import Recorder
from tests.conftest import git, make_repo, puppemon
from tests.daemon_helpers import fsck, linear
from tests.test_purge import gitb, paths_in_history, tip_runs, triggered


@pytest.fixture
def clone(tmp_path, bare_remote) -> Path:
    repo = make_repo(tmp_path / "clone", {"x": "x"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    return repo


def purge_with_git(tmp_path: Path, bare: Path, paths: list[str]) -> None:
    """Rewrite the remote's runs without `paths` by hand, with git filter-branch, and force-push it."""
    work = tmp_path / "filter"
    git("clone", "--quiet", "--no-local", "--branch", "runs", str(bare), str(work))
    git("filter-branch", "--index-filter", "git rm -r -q --cached --ignore-unmatch " + " ".join(paths),
        "--prune-empty", "runs", cwd=work, env={"FILTER_BRANCH_SQUELCH_WARNING": "1"})
    git("push", "--quiet", "--force", "origin", "runs", cwd=work)


@pytest.mark.parametrize("where", ["daemon mirror", "clone"])
@pytest.mark.parametrize("unpublished", [0, 2])
def test_after_a_purge_a_recorder_publishes_only_what_the_remote_never_had(tmp_path, bare_remote, clone,
                                                                           where, unpublished):
    if where == "daemon mirror":
        store = Store.open_or_init_bare(tmp_path / "daemon.git")
        recorder = Recorder(store, remote=str(bare_remote))
    else:
        store = Store.discover(clone)
        recorder = Recorder(store, remote="origin")
    ids = [triggered(recorder, 0, n) for n in range(3)]
    assert recorder.publish()
    waiting = [triggered(recorder, 1, n) for n in range(10, 10 + unpublished)]
    purge_with_git(tmp_path, bare_remote, [run_dir("job", ids[1]), f"requests/2025/03/01/{ids[1]}.json"])
    if where == "clone":  # a reader first: `puppemon runs` brings the clone's runs up to date
        listed = json.loads(puppemon("runs", "--json", cwd=clone).stdout)
        assert [r["id"] for r in listed] == sorted(waiting + [ids[0], ids[2]], reverse=True)
    assert recorder.publish()
    assert not [p for p in paths_in_history(bare_remote, "runs") if ids[1] in p]
    assert tip_runs(bare_remote) == sorted(f"{run_dir('job', r)}/run.json" for r in [ids[0], ids[2], *waiting])
    assert store.ref("refs/heads/runs") == gitb(bare_remote, "rev-parse", "runs").strip()
    assert recorder.unpublished() == 0
    assert linear(bare_remote)
    fsck(bare_remote)
    git("--git-dir", str(store.git_dir), "fsck", "--strict", "--no-dangling")
