"""Working trees: the tree of a directory as it is now (a snapshot), and a tree written out as files."""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pygit2

from puppemon.gitstore.command import GitError, git_message, run_git
from puppemon.gitstore.store import EXEC, FILE, LINK, TREE, Store


def snapshot(store: Store, directory: str | os.PathLike) -> str:
    """The tree of `directory` as it is now, as `git add -A && git write-tree` would make it.

    Runs on a private copy of the index, so the user's index, HEAD and refs
    are never written. Tracked files keep the stat cache of the copy, which
    keeps this fast on large trees.
    """
    # The copy keeps the index's mtime: git re-reads an entry whose file changed in the same
    # timestamp tick as the index was written ("racy git"); a newer copy would hide that change.
    # The copy is written whole (no split index), so no sharedindex.* file is left in .git.
    workdir = store.workdir
    if workdir is None:
        raise GitError(f"{store.git_dir} is a bare repository; run push from a working tree")
    directory = Path(directory).resolve()
    rel = os.path.relpath(directory, workdir.resolve())
    if rel.startswith(".."):
        raise GitError(f"{directory} is outside the repository at {workdir}")
    with tempfile.TemporaryDirectory(prefix="puppemon-index-") as tmp:
        index = os.path.join(tmp, "index")
        user_index = store.git_dir / "index"
        if user_index.exists():
            shutil.copy2(user_index, index)
        env = {"GIT_INDEX_FILE": index}
        whole = ["-c", "core.splitIndex=false", "-c", "index.threads=1"]
        proc = run_git([*whole, "add", "--all", "--", "."], cwd=directory, env=env, check=False)
        if proc.returncode != 0:
            msg = git_message(proc.stderr)
            if "does not have a commit checked out" in msg:
                msg += " (commit in that nested repository, or add it to .gitignore)"
            raise GitError(f"could not snapshot {directory}: {msg}")
        args = [*whole, "write-tree"] + ([f"--prefix={Path(rel).as_posix()}/"] if rel != "." else [])
        tree = run_git(args, cwd=workdir, env=env).stdout.decode().strip()
    return tree


def checkout(store: Store, treeish: str, dest: str | os.PathLike) -> None:
    """Write the tree's files into the new directory `dest` (modes and symlinks kept, gitlinks skipped)."""
    dest = Path(dest)
    dest.mkdir(parents=True)
    _checkout(store.repo, store.tree(treeish), dest)


def _checkout(repo: pygit2.Repository, tree: pygit2.Tree, dest: Path) -> None:
    for obj in tree:
        target = dest / obj.name
        mode = obj.filemode
        if mode == TREE:
            target.mkdir()
            _checkout(repo, obj, target)
        elif mode == LINK:
            os.symlink(repo[obj.id].data, target)
        elif mode in (FILE, EXEC):
            with open(target, "wb") as fh:
                fh.write(repo[obj.id].data)
            if mode == EXEC:
                os.chmod(target, os.stat(target).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        # gitlinks (submodules) have no content here: skipped
