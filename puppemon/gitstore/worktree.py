"""Working trees: the tree of a directory as it is now (a snapshot), and a tree written out as files."""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from puppemon.gitstore.command import GitError, git_message, run_git
from puppemon.gitstore.objects import TREE

if TYPE_CHECKING:
    from puppemon.gitstore.store import Store


def snapshot(store, directory: str | os.PathLike) -> str:
    """The tree of `directory` as it is now, as `git add -A && git write-tree` would make it.

    `store` is anything with a `git_dir` and a `workdir` (a Store, a plumbing.Checkout).
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


class FilterMissing(GitError):
    """Files of a tree need a git filter driver (git-lfs, ...) this machine has not configured."""


class UnsafeTree(GitError):
    """A tree holds an entry no checkout may write: `..`, a name with `/`, `.git`, ..."""


def unsafe_name(name: bytes) -> str | None:
    """Why a tree entry called `name` must not be checked out, or None when it is a plain name.

    git ends a name at NUL, so none holds one; `.git` in any case (a case-insensitive file system)."""
    if name in (b"", b".", b".."):
        return "is not a file name"
    if b"/" in name:
        return "has a '/' in it"
    if name.lower() == b".git":
        return "would be a .git directory"
    return None


def check_names(store: Store, treeish: str) -> None:
    """Raise UnsafeTree if an entry of the tree, at any depth, has a name that would write outside a
    checkout of it or into a .git (git plumbing can make such a tree; `git add` never does)."""
    seen: set[str] = set()
    stack = [("", store.tree(treeish))]
    while stack:
        prefix, tree = stack.pop()
        if str(tree.id) in seen:
            continue  # the same subtree again: its names are checked already
        seen.add(str(tree.id))
        names: set[bytes] = set()
        for entry in tree:
            raw = entry.raw_name
            shown = prefix + raw.decode("utf-8", "replace")
            why = unsafe_name(raw) or ("is twice in its directory" if raw in names else None)
            if why:
                raise UnsafeTree(f"refusing to check out {treeish[:7]}: the entry {shown!r} {why} "
                                 "(a tree `git add` cannot make; push the project again with `puppemon push`)")
            names.add(raw)
            if entry.filemode == TREE:
                stack.append((shown + "/", store.tree(str(entry.id))))


def checkout(store: Store, treeish: str, dest: str | os.PathLike, remote: str | None = None) -> None:
    """Write the tree into the new directory `dest` as `git checkout` of it would on this machine.

    Attributes come from the tree itself (eol, working-tree-encoding, ident, filters),
    the rest from this machine's git config; a filter driver the tree needs and this
    machine lacks is FilterMissing, never a checkout of the raw blobs (LFS pointers).
    `remote` is where filters such as git-lfs fetch their objects from.
    """
    check_names(store, treeish)
    dest = Path(dest)
    dest.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="puppemon-checkout-") as tmp:
        env = {"GIT_INDEX_FILE": os.path.join(tmp, "index")}
        base = ["--git-dir", str(store.git_dir), "--work-tree", str(dest)]
        proc = run_git([*base, "read-tree", treeish], env=env, check=False)
        if proc.returncode != 0:
            msg = git_message(proc.stderr)
            if "invalid path" in msg:  # git's own checks (core.protectNTFS, protectHFS) go further than ours
                raise UnsafeTree(f"refusing to check out {treeish[:7]}: {msg}")
            raise GitError(f"could not check out {treeish[:7]}: {msg}")
        missing = {name: paths for name, paths in filters_needed(base, env).items() if not has_filter(base, name)}
        if missing:
            raise FilterMissing(_missing_message(missing))
        origin = ["-c", f"remote.origin.url={remote}"] if remote else []   # where git-lfs looks
        proc = run_git([*origin, *base, "checkout-index", "--all", "--force"], env=env, check=False)
        if proc.returncode != 0:
            raise GitError(f"could not check out {treeish[:7]}: {git_message(proc.stderr)}")


def filters_needed(base: list[str], env: dict[str, str]) -> dict[str, list[str]]:
    """{filter driver: paths} that the index's own .gitattributes give a `filter` to."""
    paths = run_git([*base, "ls-files", "-z"], env=env).stdout
    if not paths:
        return {}
    out = run_git([*base, "check-attr", "--cached", "-z", "--stdin", "filter"], env=env, input=paths).stdout
    parts = out.split(b"\0")
    needed: dict[str, list[str]] = {}
    for path, value in zip(parts[0::3], parts[2::3]):
        if value not in (b"unspecified", b"unset", b"set", b""):
            needed.setdefault(value.decode("utf-8", "replace"), []).append(path.decode("utf-8", "replace"))
    return needed


def has_filter(base: list[str], name: str) -> bool:
    """Whether git config here defines the filter driver `name` (a process or a smudge command)."""
    return any(run_git([*base, "config", "--get", f"filter.{name}.{key}"], check=False).returncode == 0
               for key in ("process", "smudge"))


def _missing_message(missing: dict[str, list[str]]) -> str:
    parts = []
    for name, paths in sorted(missing.items()):
        shown = ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")
        how = ("install git-lfs on this server and run `git lfs install`" if name == "lfs"
               else f"configure filter.{name}.smudge or filter.{name}.process in this server's git config")
        files = "file needs" if len(paths) == 1 else "files need"
        parts.append(f"{len(paths)} {files} the git filter driver {name!r}, which this server does not have "
                     f"({shown}); {how}")
    return "; ".join(parts)
