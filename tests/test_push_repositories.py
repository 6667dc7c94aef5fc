"""`puppemon push` from repositories of every shape git allows: racily clean index entries, a
separate git dir, a symlinked `.git`, linked worktrees, submodule checkouts, a split index, hooks."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from puppemon.gitstore import Store
from puppemon.gitstore.worktree import snapshot
from tests.conftest import MINIMAL_MANIFEST, git, make_repo, puppemon
from tests.test_push import oracle_tree


def remote_file(bare: Path, path: str) -> str:
    return git("--git-dir", str(bare), "show", f"flows:{path}")


def project_in(path: Path, bare_remote: Path, **init) -> Path:
    git("init", "--quiet", *[f"--{k.replace('_', '-')}={v}" for k, v in init.items()], str(path))
    (path / "puppemon.yaml").write_text(MINIMAL_MANIFEST)
    git("remote", "add", "origin", str(bare_remote), cwd=path)
    return path


def content_of(store: Store, tree: str, path: str) -> bytes:
    return store.read(tree, path)


def test_racily_clean_entries_are_read_again(tmp_path):
    """`echo aaaa > r.txt; git add r.txt; echo bbbb > r.txt` (same size) must deploy bbbb, also when the
    second write lands in the same timestamp tick as the first and as the index (a coarse-clock file
    system): git then re-reads the entry because it is racily clean, and so must the snapshot."""
    stale = []
    for n in range(200):
        repo = tmp_path / f"r{n}"
        git("init", "--quiet", str(repo))
        coarse = n % 2   # every other one as a coarse clock makes it: both writes and the index in one tick
        if coarse:
            git("config", "core.trustctime", "false", cwd=repo)   # (ctime cannot be set back by hand)
        (repo / "r.txt").write_text("aaaa\n")
        tick = time.time_ns() - 10 * 10**9                        # a tick well before the push
        if coarse:
            os.utime(repo / "r.txt", ns=(tick, tick))
        git("add", "r.txt", cwd=repo)
        (repo / "r.txt").write_text("bbbb\n")
        if coarse:
            for path in (repo / "r.txt", repo / ".git" / "index"):
                os.utime(path, ns=(tick, tick))
            # git itself still sees the edit (plumbing: it reads the index without rewriting it)
            assert git("diff-files", "--name-only", cwd=repo) == "r.txt\n"
        store = Store.discover(repo)
        if content_of(store, snapshot(store, repo), "r.txt") != b"bbbb\n":
            stale.append(n)
        shutil.rmtree(repo)
    assert stale == []


def test_racy_entry_through_the_cli_matches_git(project, bare_remote):
    git("config", "core.trustctime", "false", cwd=project)
    (project / "r.txt").write_text("aaaa\n")
    tick = time.time_ns() - 10 * 10**9
    os.utime(project / "r.txt", ns=(tick, tick))
    git("add", "r.txt", cwd=project)
    (project / "r.txt").write_text("bbbb\n")
    for path in (project / "r.txt", project / ".git" / "index"):
        os.utime(path, ns=(tick, tick))
    expected = oracle_tree(project)
    puppemon("push", cwd=project)
    assert remote_file(bare_remote, "r.txt") == "bbbb\n"
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows^{tree}").strip() == expected


def test_separate_git_dir(tmp_path, bare_remote):
    repo = project_in(tmp_path / "p", bare_remote, separate_git_dir=tmp_path / "elsewhere.git")
    assert (repo / ".git").is_file()
    (repo / "job.sh").write_text("echo hi\n")
    expected = oracle_tree(repo)
    result = puppemon("push", cwd=repo)
    assert result.stdout.startswith("pushed flows ")
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows^{tree}").strip() == expected
    assert remote_file(bare_remote, "job.sh") == "echo hi\n"


def test_symlinked_dot_git(tmp_path, bare_remote):
    real = tmp_path / "real-git-dir"
    git("init", "--quiet", "--bare", str(real))
    git("--git-dir", str(real), "config", "core.bare", "false")
    repo = tmp_path / "p"
    repo.mkdir()
    os.symlink(real, repo / ".git")
    (repo / "puppemon.yaml").write_text(MINIMAL_MANIFEST)
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    expected = oracle_tree(repo)
    puppemon("push", cwd=repo)
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows^{tree}").strip() == expected


def test_linked_worktree_and_its_subdirectory(project, bare_remote, tmp_path):
    git("worktree", "add", "--quiet", "-b", "other", str(tmp_path / "wt"), cwd=project)
    wt = tmp_path / "wt"
    (wt / "only-here.txt").write_text("worktree\n")
    expected = oracle_tree(wt)
    puppemon("push", cwd=wt)
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows^{tree}").strip() == expected
    message = git("--git-dir", str(bare_remote), "log", "-1", "--format=%B", "flows")
    assert "Puppemon-Source-Branch: other\n" in message


def test_project_inside_a_submodule_checkout(tmp_path, bare_remote):
    sub_src = make_repo(tmp_path / "sub-src", {"puppemon.yaml": MINIMAL_MANIFEST, "job.sh": "echo sub\n"})
    git("remote", "add", "origin", str(bare_remote), cwd=sub_src)
    top = make_repo(tmp_path / "top", {"README": "top\n"})
    git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(sub_src), "automations", cwd=top)
    checkout = top / "automations"
    assert (checkout / ".git").is_file()
    git("remote", "set-url", "origin", str(bare_remote), cwd=checkout)
    (checkout / "job.sh").write_text("echo edited in the submodule\n")
    expected = oracle_tree(checkout)
    puppemon("push", cwd=checkout)
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows^{tree}").strip() == expected


def test_split_index_leaves_no_shared_index_behind(project, bare_remote):
    git("config", "core.splitIndex", "true", cwd=project)
    git("add", "-A", cwd=project)
    shared = sorted(p.name for p in (project / ".git").glob("sharedindex.*"))
    assert shared  # the user's own split index
    for n in range(3):
        (project / "job.sh").write_text(f"echo {n}\n")
        (project / f"new-{n}.txt").write_text("untracked\n")   # entries the user's index lacks
        puppemon("push", cwd=project)
    assert sorted(p.name for p in (project / ".git").glob("sharedindex.*")) == shared
    assert remote_file(bare_remote, "job.sh") == "echo 2\n"


def test_a_failing_pre_push_hook_says_why(project, bare_remote):
    hook = project / ".git" / "hooks" / "pre-push"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text("#!/bin/sh\necho 'pre-push: deploys are frozen until Monday' >&2\nexit 1\n")
    hook.chmod(0o755)
    proc = puppemon("push", cwd=project, check=False)
    assert (proc.returncode, proc.stdout) == (1, "")
    assert proc.stderr == (f"Error: could not push to {bare_remote}: the pre-push hook refused it: "
                           "pre-push: deploys are frozen until Monday\n")
    assert git("--git-dir", str(bare_remote), "branch", "--list", "flows") == ""
