"""`puppemon push`: the snapshot equals git's own `add -A && write-tree`, and nothing of the user's moves."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import MINIMAL_MANIFEST, git, make_repo, puppemon, wait_until


def oracle_tree(repo: Path) -> str:
    """What git itself makes of the working tree: `add -A && write-tree` on a `cp -p` copy of the index
    (its mtime kept, so racily clean entries are read again as git would)."""
    git_dir = Path(git("rev-parse", "--absolute-git-dir", cwd=repo).strip())
    copy = git_dir / "oracle-index"
    try:
        if (git_dir / "index").exists():
            shutil.copy2(git_dir / "index", copy)
        env = {"GIT_INDEX_FILE": str(copy)}
        git("add", "-A", cwd=repo, env=env)
        return git("write-tree", cwd=repo, env=env).strip()
    finally:
        copy.unlink(missing_ok=True)


def user_state(repo: Path) -> dict:
    """Everything push must leave byte-for-byte as it was."""
    index = repo / ".git" / "index"
    return {
        "index": hashlib.sha256(index.read_bytes()).hexdigest() if index.exists() else None,
        "HEAD": (repo / ".git" / "HEAD").read_text(),
        "refs": git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo),
        "status": git("status", "--porcelain=v2", "--untracked-files=all", "--ignored", cwd=repo),
    }


def remote_tree(bare: Path, branch: str = "flows") -> str:
    return git("--git-dir", str(bare), "rev-parse", f"{branch}^{{tree}}").strip()


def fsck(bare: Path) -> None:
    git("--git-dir", str(bare), "fsck", "--strict", "--no-dangling")


def build_edge_cases(repo: Path, tmp_path: Path) -> None:
    """A working tree with every case DESIGN.md names."""
    (repo / ".gitignore").write_text("*.log\nbuild/\nignored-but-tracked.txt\n")
    (repo / "tracked.txt").write_text("v1\n")
    (repo / "to-delete.txt").write_text("bye\n")
    (repo / "ignored-but-tracked.txt").write_text("tracked anyway\n")
    (repo / "run.sh").write_text("#!/bin/sh\necho run\n")
    (repo / "run.sh").chmod(0o755)
    (repo / "becomes-exec.sh").write_text("echo x\n")
    (repo / "dir with spaces").mkdir()
    (repo / "dir with spaces" / "fïlé ünïcode.txt").write_text("unicode\n")
    os.symlink("tracked.txt", repo / "link-to-tracked")
    os.symlink("/nonexistent/target", repo / "dangling-link")
    git("add", "-A", cwd=repo)
    git("add", "-f", "ignored-but-tracked.txt", cwd=repo)
    # a submodule, recorded as a gitlink
    sub_src = make_repo(tmp_path / "subsrc", {"s.txt": "sub\n"})
    git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(sub_src), "vendor/sub", cwd=repo)
    git("commit", "--quiet", "-m", "edge cases", cwd=repo)
    # now the uncommitted state push must capture
    (repo / "tracked.txt").write_text("v2 dirty edit\n")
    (repo / "to-delete.txt").unlink()
    (repo / "ignored-but-tracked.txt").write_text("tracked anyway, edited\n")
    (repo / "becomes-exec.sh").chmod(0o755)
    (repo / "untracked new.txt").write_text("new\n")
    (repo / "debug.log").write_text("ignored\n")
    (repo / "build").mkdir()
    (repo / "build" / "out.bin").write_bytes(b"\0" * 10)
    (repo / "excluded-by-info.txt").write_text("x\n")
    (repo / ".git" / "info").mkdir(exist_ok=True)
    (repo / ".git" / "info" / "exclude").write_text("excluded-by-info.txt\n")
    global_ignore = tmp_path / "global-ignore"
    global_ignore.write_text("*.swp\n")
    git("config", "core.excludesFile", str(global_ignore), cwd=repo)
    (repo / "editor.swp").write_text("swap\n")
    os.symlink("run.sh", repo / "new-link")
    # an untracked nested repository with a commit becomes a gitlink too
    make_repo(repo / "nested", {"n.txt": "nested\n"})


def test_push_tree_equals_git_write_tree_and_user_state_untouched(project, bare_remote, tmp_path):
    build_edge_cases(project, tmp_path)
    before = user_state(project)
    expected = oracle_tree(project)

    result = puppemon("push", cwd=project)

    assert user_state(project) == before
    assert remote_tree(bare_remote) == expected
    listing = git("--git-dir", str(bare_remote), "ls-tree", "-r", "flows")
    assert "160000 commit" in listing and "\tvendor/sub\n" in listing and "\tnested\n" in listing
    assert "120000 blob" in listing and "\tdangling-link\n" in listing
    assert "100755 blob" in listing and "\tbecomes-exec.sh\n" in listing
    assert "debug.log" not in listing and "build/" not in listing and "editor.swp" not in listing
    assert "excluded-by-info.txt" not in listing and "to-delete.txt" not in listing
    assert "ignored-but-tracked.txt" in listing
    assert '"dir with spaces/f\\303\\257l\\303\\251 \\303\\274n\\303\\257code.txt"' in listing
    assert result.stdout.startswith("pushed flows ")
    fsck(bare_remote)


def test_push_message_subject_trailers_and_parent_chain(project, bare_remote):
    head = git("rev-parse", "HEAD", cwd=project).strip()
    puppemon("push", cwd=project)
    (project / "job.sh").write_text("echo changed\n")
    (project / "extra.txt").write_text("x\n")
    puppemon("push", "-m", "second deploy", cwd=project)

    log = git("--git-dir", str(bare_remote), "log", "--format=%H %P", "flows").splitlines()
    assert len(log) == 2
    second, first = (line.split() for line in log)
    assert second[1] == first[0] and len(first) == 1  # parent = previous flows tip, never the source branch
    msg = git("--git-dir", str(bare_remote), "log", "-1", "--format=%B", "flows")
    user = git("--git-dir", str(bare_remote), "log", "-1", "--format=%(trailers:key=Puppemon-Pushed-By,valueonly)",
               "flows").strip()
    assert msg == (f"deploy main@{head[:7]} (+2 dirty files)\n\nsecond deploy\n\n"
                   f"Puppemon-Source-Branch: main\nPuppemon-Source-Commit: {head}\n"
                   f"Puppemon-Dirty: true\nPuppemon-Pushed-By: {user}\n\n")
    assert "@" in user
    first_msg = git("--git-dir", str(bare_remote), "log", "-1", "--format=%s%n%(trailers:key=Puppemon-Dirty)",
                    "flows~1")
    assert first_msg == f"deploy main@{head[:7]}\nPuppemon-Dirty: false\n\n"


def test_output_line_and_unchanged_push_writes_nothing(project, bare_remote):
    first = puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    assert first.stdout == f"pushed flows {tip[:7]} to origin (1 flow; 0 files changed, 2 added, 0 removed)\n"
    again = puppemon("push", cwd=project)
    assert again.stdout == f"flows already up to date (flows {tip[:7]} on origin)\n"
    assert git("--git-dir", str(bare_remote), "rev-parse", "flows").strip() == tip
    (project / "job.sh").unlink()
    (project / "new.txt").write_text("n\n")
    (project / "puppemon.yaml").write_text(MINIMAL_MANIFEST + "  other:\n    command: [\"true\"]\n")
    third = puppemon("push", cwd=project)
    tip = git("--git-dir", str(bare_remote), "rev-parse", "flows").strip()
    assert third.stdout == f"pushed flows {tip[:7]} to origin (2 flows; 1 file changed, 1 added, 1 removed)\n"


def test_dry_run_writes_nothing_remote(project, bare_remote):
    result = puppemon("push", "--dry-run", cwd=project)
    assert result.stdout == ("added     8 bytes  job.sh\nadded    65 bytes  puppemon.yaml\n"
                             "total: 2 files, 73 bytes in the snapshot\n"
                             "dry run: would push flows to origin (1 flow; 0 files changed, 2 added, 0 removed)\n")
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""


def test_invalid_manifest_refused_remote_untouched(project, bare_remote):
    puppemon("push", cwd=project)
    refs_before = git("--git-dir", str(bare_remote), "for-each-ref")
    (project / "puppemon.yaml").write_text("version: 1\nflows:\n  backup:\n    command: x\n    every: often\n")
    result = puppemon("push", cwd=project, check=False)
    validate = puppemon("validate", cwd=project, check=False)
    assert result.returncode == 1 and validate.returncode == 1
    assert result.stderr == validate.stderr
    assert result.stderr.startswith("Error: puppemon.yaml:5:12: flows.backup.every: 'often' is not a duration")
    assert "Traceback" not in result.stderr
    assert git("--git-dir", str(bare_remote), "for-each-ref") == refs_before


def test_ignored_manifest_is_refused(project, bare_remote):
    (project / ".gitignore").write_text("puppemon.yaml\n")
    git("rm", "--cached", "--quiet", "puppemon.yaml", cwd=project)
    result = puppemon("push", cwd=project, check=False)
    assert result.returncode == 1
    assert result.stderr == ("Error: puppemon.yaml is ignored by git (.gitignore or info/exclude), so it would "
                             "not be deployed; stop ignoring it\n")
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""


def test_push_from_repo_without_commits_and_remote_by_url(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "fresh", {"puppemon.yaml": MINIMAL_MANIFEST}, commit=False)
    result = puppemon("push", "--remote", f"file://{bare_remote}", cwd=repo)
    assert result.stdout.startswith("pushed flows ")
    assert git("--git-dir", str(bare_remote), "log", "-1", "--format=%s", "flows") == "deploy main (no commits) (+1 dirty file)\n"
    assert remote_tree(bare_remote) == oracle_tree(repo)
    assert not (repo / ".git" / "index").exists()  # push never creates the user's index


def test_push_subdirectory_project_deploys_that_subtree(tmp_path, bare_remote):
    repo = make_repo(tmp_path / "mono", {"app/puppemon.yaml": MINIMAL_MANIFEST, "app/job.sh": "x\n", "other.txt": "o"})
    puppemon("push", "--remote", str(bare_remote), "-C", "app", cwd=repo)
    assert remote_tree(bare_remote) == git("rev-parse", "HEAD:app", cwd=repo).strip()


def test_no_remote_and_not_a_repo_errors(tmp_path):
    repo = make_repo(tmp_path / "noremote", {"puppemon.yaml": MINIMAL_MANIFEST})
    result = puppemon("push", cwd=repo, check=False)
    assert (result.returncode, result.stderr) == (1, "Error: no remote to push to; pass --remote NAME|URL, or add "
                                                  "one with `git remote add origin URL`\n")
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "puppemon.yaml").write_text(MINIMAL_MANIFEST)
    result = puppemon("push", cwd=plain, check=False)
    assert (result.returncode, result.stderr) == (
        1, f"Error: {plain} is not inside a git repository; run `git init` there first\n")


def test_unreachable_remote_is_one_clear_line(project, tmp_path):
    result = puppemon("push", "--remote", str(tmp_path / "missing.git"), cwd=project, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: could not fetch from ")
    assert "does not appear to be a git repository" in result.stderr


def test_two_pushers_racing_both_land(tmp_path, bare_remote):
    """Two clones pushing at the same time: each retries on the other's tip; both deploys are in history."""
    clones = []
    for name in ("a", "b"):
        repo = make_repo(tmp_path / name, {"puppemon.yaml": MINIMAL_MANIFEST, f"{name}.txt": name})
        git("remote", "add", "origin", str(bare_remote), cwd=repo)
        clones.append(repo)
    for round_ in range(3):
        for repo in clones:
            (repo / f"{repo.name}.txt").write_text(f"{repo.name} {round_}\n")
        procs = [subprocess.Popen([sys.executable, "-m", "puppemon", "push"], cwd=repo,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for repo in clones]
        outs = [p.communicate(timeout=60) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outs
    log = git("--git-dir", str(bare_remote), "log", "--format=%P", "flows").splitlines()
    assert len(log) == 6
    assert all(len(parents.split()) == 1 for parents in log[:-1])  # linear, no merges
    fsck(bare_remote)


@pytest.mark.slow
def test_watch_pushes_after_an_edit(project, bare_remote):
    proc = subprocess.Popen([sys.executable, "-m", "puppemon", "push", "--watch"], cwd=project,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = wait_for_commits(bare_remote, 1)
        (project / "job.sh").write_text("echo edited\n")
        second = wait_for_commits(bare_remote, 2)
        assert second != first
        assert git("--git-dir", str(bare_remote), "show", "flows:job.sh") == "echo edited\n"
        # an ignored file changing pushes nothing
        (project / ".gitignore").write_text("*.tmp\n")
        third = wait_for_commits(bare_remote, 3)
        (project / "scratch.tmp").write_text("x")
        time.sleep(2.5)  # the absence of a push can only be observed by waiting past the debounce
        assert git("--git-dir", str(bare_remote), "rev-parse", "flows").strip() == third
    finally:
        proc.send_signal(2)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "watching" in err and "Traceback" not in err


def wait_for_commits(bare: Path, count: int, timeout: float = 20) -> str:
    def reached() -> bool:
        proc = subprocess.run(["git", "--git-dir", str(bare), "rev-list", "--count", "flows"],
                              capture_output=True, text=True)
        return proc.returncode == 0 and int(proc.stdout) >= count

    wait_until(reached, timeout, f"flows to reach {count} commits")
    return git("--git-dir", str(bare), "rev-parse", "flows").strip()


def test_watch_function_stops_cleanly(project, bare_remote):
    from puppemon.commands.push import watch_and_push

    stop = threading.Event()
    thread = threading.Thread(target=watch_and_push, args=(project, None, "flows", None, stop))
    thread.start()
    wait_for_commits(bare_remote, 1)
    stop.set()
    thread.join(10)
    assert not thread.is_alive()


def test_push_goes_where_git_would_push_a_remote(project, bare_remote, tmp_path):
    """A pushurl, and a url.<base>.pushInsteadOf rewrite: the deploy lands where `git push origin` would
    send it, and the remote's tip is still fetched from its (fetch) URL."""
    pushed_to = tmp_path / "push-side.git"
    git("init", "--bare", "--quiet", str(pushed_to))
    git("config", "remote.origin.pushurl", str(pushed_to), cwd=project)
    puppemon("push", cwd=project)
    assert git("--git-dir", str(pushed_to), "for-each-ref", "--format=%(refname)") == "refs/heads/flows\n"
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""
    rewritten = tmp_path / "rewritten.git"
    git("init", "--bare", "--quiet", str(rewritten))
    git("config", "--unset", "remote.origin.pushurl", cwd=project)
    git("config", f"url.{rewritten}.pushInsteadOf", str(bare_remote), cwd=project)
    puppemon("push", cwd=project)
    assert git("--git-dir", str(rewritten), "for-each-ref", "--format=%(refname)") == "refs/heads/flows\n"
    assert git("--git-dir", str(bare_remote), "for-each-ref") == ""


def blob_total(repo: Path, tree: str) -> str:
    """The dry run's total line for `tree`, counted by git itself: the blobs `git ls-tree -r -l` lists."""
    from puppemon.formats import format_size, plural

    sizes = [int(line.split()[3]) for line in git("ls-tree", "-r", "-l", tree, cwd=repo).splitlines()
             if line.split()[1] == "blob"]
    return f"total: {plural(len(sizes), 'file')}, {format_size(sum(sizes))} in the snapshot"


def test_the_snapshot_total_is_git_s_count_push_after_push(project, bare_remote, tmp_path):
    """A push counts its total from its parent's (kept from the push that made it) and the diff; every
    kind of change, a lost or broken record of totals, and a parent pushed from elsewhere leave it right."""
    sub_src = make_repo(tmp_path / "subsrc", {"s.txt": "sub\n"})
    steps = [
        lambda: (project / "data.bin").write_bytes(b"x" * 5000),
        lambda: (project / "job.sh").write_text("echo a longer line than before\n"),
        lambda: ((project / "data.bin").unlink(), os.symlink("job.sh", project / "data.bin")),   # file -> link
        lambda: git("-c", "protocol.file.allow=always", "submodule", "add", "--quiet", str(sub_src), "vendor/sub",
                    cwd=project),
        lambda: ((project / ".git" / "puppemon" / "totals").write_text("garbage\n"),
                 (project / "a.txt").write_text("a")),
        lambda: ((project / ".git" / "puppemon" / "totals").unlink(), (project / "a.txt").write_text("aa")),
        lambda: ((project / "job.sh").unlink(), (project / "dir").mkdir(), (project / "dir" / "f").write_text("f")),
    ]
    puppemon("push", cwd=project)
    for step in steps:
        step()
        dry = puppemon("push", "--dry-run", cwd=project).stdout.splitlines()
        assert dry[-2] == blob_total(project, oracle_tree(project))
        puppemon("push", cwd=project)
    elsewhere = tmp_path / "elsewhere"
    git("clone", "--quiet", "--branch", "flows", str(bare_remote), str(elsewhere))
    (elsewhere / "more.txt").write_text("from another clone\n")
    puppemon("push", cwd=elsewhere)
    (project / "last.txt").write_text("last\n")
    dry = puppemon("push", "--dry-run", cwd=project).stdout.splitlines()    # its parent: not pushed from here
    assert dry[-2] == blob_total(project, oracle_tree(project))


@pytest.mark.parametrize("breaks", ["manifest", "entrypoint", "secret"])
def test_a_refused_push_leaves_the_repository_s_refs_as_they_were(project, bare_remote, breaks):
    puppemon("push", cwd=project)
    before = user_state(project)
    if breaks == "manifest":
        (project / "puppemon.yaml").write_text("version: 1\nflows:\n  x:\n    every: 1h\n")
    elif breaks == "entrypoint":
        (project / "puppemon.yaml").write_text("version: 1\nflows:\n  x:\n    entrypoint: gone.py:main\n")
    else:
        (project / "deploy_key").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n"
                                            "-----END OPENSSH PRIVATE KEY-----\n")
    result = puppemon("push", cwd=project, check=False)
    assert result.returncode == 1 and result.stderr.startswith("Error: ")
    after = user_state(project)
    assert after["refs"] == before["refs"]          # no scratch ref of the fetch is left
    assert (after["index"], after["HEAD"]) == (before["index"], before["HEAD"])
