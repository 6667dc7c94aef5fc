"""Git objects and refs through pygit2 (trees built in memory, refs moved by compare-and-swap), and
transport through the git binary (fetch, push), so the user's ssh config, agent, credential
helpers and CI credentials apply.
"""
from __future__ import annotations

import os
import socket
import subprocess
import threading
from pathlib import Path
from typing import Iterator, Mapping

import pygit2

from puppemon.gitstore import transport
from puppemon.gitstore.command import GitError, RefConflict, RemoteMissingRef, run_git
from puppemon.gitstore.memory import child, ref_name
from puppemon.gitstore.objects import EMPTY_TREE, FILE, GITLINK, TREE, Change, Commit, Entry, TooLarge


def signature(name: str | None = None, email: str | None = None) -> pygit2.Signature:
    host = socket.gethostname() or "localhost"
    return pygit2.Signature(name or "puppemon", email or f"puppemon@{host}")


class Store:
    """A git repository (bare or not), through pygit2 for objects and git for transport."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            self.repo = pygit2.Repository(str(path))
        except (pygit2.GitError, KeyError):
            raise GitError(f"{path} is not a git repository") from None
        self.lock = threading.RLock()
        self._sizes: dict[str, int] = {}   # blob -> size: a blob never changes, and a push asks twice

    # -- opening ---------------------------------------------------------
    @classmethod
    def discover(cls, start: str | os.PathLike) -> Store:
        """The repository that contains `start` (a working-tree directory).

        Opened from the working tree, not from the git dir discovery finds: a `.git`
        that is a file (a separate git dir, a worktree, a submodule) or a symlink
        says where the git dir is, and only the working tree says where the files are.
        """
        if pygit2.discover_repository(str(start)) is None:
            raise GitError(f"{os.path.abspath(start)} is not inside a git repository; "
                           f"run `git init` there first")
        return cls(start)

    @classmethod
    def open_or_init_bare(cls, path: str | os.PathLike) -> Store:
        """Open the bare repository at `path`, creating it if needed."""
        path = Path(path)
        if not (path / "HEAD").exists():
            path.mkdir(parents=True, exist_ok=True)
            run_git(["init", "--bare", "--quiet", str(path)])
        store = cls(path)  # packs with their reverse index: else each push builds one of a big pack (git < 2.41)
        if store.config("pack.writeReverseIndex") is None:
            store.repo.config["pack.writeReverseIndex"] = True
        return store

    @property
    def git_dir(self) -> Path:
        return Path(self.repo.path)

    @property
    def workdir(self) -> Path | None:
        return Path(self.repo.workdir) if self.repo.workdir else None

    def git(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run git in this repository."""
        where = ["-C", str(self.workdir)] if self.workdir else ["--git-dir", str(self.git_dir)]
        return run_git([*where, *args], **kwargs)

    # -- refs ------------------------------------------------------------
    def ref(self, name: str) -> str | None:
        """The commit a ref points at, or None."""
        try:
            ref = self.repo.references.get(ref_name(name))
        except pygit2.InvalidSpecError:
            raise GitError(f"{name!r} is not a valid ref name") from None
        return str(ref.resolve().target) if ref is not None else None

    def set_ref(self, name: str, new: str, expected: str | None, message: str = "puppemon") -> None:
        """Point `name` at `new` if it still points at `expected` (None: must not exist)."""
        with self.lock:
            try:
                with self.repo.transaction() as txn:
                    txn.lock_ref(name)
                    current = self.ref(name)
                    if current != expected:
                        raise RefConflict(f"{name} moved: expected {expected or 'nothing'}, found {current}")
                    txn.set_target(name, pygit2.Oid(hex=new), message=message)
            except pygit2.GitError as exc:
                # another writer holds the lock file
                raise RefConflict(f"{name} is being updated by another process: {exc}") from None

    def force_ref(self, name: str, new: str) -> None:
        with self.lock:
            self.repo.references.create(name, pygit2.Oid(hex=new), force=True)

    def delete_ref(self, name: str) -> None:
        with self.lock:
            ref = self.repo.references.get(ref_name(name))
            if ref is not None:
                ref.delete()

    def refs(self, prefix: str) -> dict[str, str]:
        """Refs under `prefix` and the objects they point at."""
        return {name: str(self.repo.references[name].target)
                for name in self.repo.references if name.startswith(prefix)}

    # -- objects ---------------------------------------------------------
    def blob(self, data: bytes) -> str:
        return str(self.repo.create_blob(data))

    def commit(self, tree: str, parents: list[str], message: str,
               author: pygit2.Signature | None = None, committer: pygit2.Signature | None = None) -> str:
        """Write a commit object (no ref is moved)."""
        sig = author or signature()
        oid = self.repo.create_commit(None, sig, committer or sig, message, pygit2.Oid(hex=tree),
                                      [pygit2.Oid(hex=p) for p in parents])
        return str(oid)

    def author_of(self, sha: str) -> pygit2.Signature:
        return self.repo[sha].author

    def merge_base(self, a: str, b: str) -> str | None:
        base = self.repo.merge_base(a, b)
        return str(base) if base is not None else None

    def ahead_behind(self, local: str, upstream: str) -> tuple[int, int]:
        return self.repo.ahead_behind(local, upstream)

    def tree_changes(self, old_tree: str | None, new_tree: str) -> dict[str, tuple[str, int] | None]:
        """Path -> (blob, mode), or None for a deletion, from one tree to another."""
        old = self.tree(old_tree) if old_tree else self._empty_tree()
        changes: dict[str, tuple[str, int] | None] = {}
        for delta in self.repo.diff(old, self.tree(new_tree)).deltas:
            if delta.status == pygit2.GIT_DELTA_DELETED:
                changes[delta.old_file.path] = None
            else:
                changes[delta.new_file.path] = (str(delta.new_file.id), delta.new_file.mode)
        return changes

    def get_commit(self, sha: str) -> Commit:
        c = self.repo[sha]
        if not isinstance(c, pygit2.Commit):
            c = c.peel(pygit2.Commit)
        return Commit(str(c.id), str(c.tree_id), tuple(str(p) for p in c.parent_ids),
                      c.message, c.commit_time)

    def default_signature(self) -> pygit2.Signature:
        """The user's configured identity, or puppemon@host when none is set."""
        try:
            return self.repo.default_signature
        except (KeyError, pygit2.GitError):
            return signature()

    def _empty_tree(self) -> pygit2.Tree:
        return self.tree(str(self.repo.TreeBuilder().write()))  # written: it may not be in this repository

    def tree(self, oid: str) -> pygit2.Tree:
        """The tree object of a tree or commit (for gitstore's own modules)."""
        obj = self.repo[oid]
        return obj if isinstance(obj, pygit2.Tree) else obj.peel(pygit2.Tree)

    def lookup(self, treeish: str, path: str) -> Entry | None:
        """The entry at `path` in a tree or commit, or None."""
        tree = self.tree(treeish)
        if path in ("", "."):
            return Entry("", TREE, str(tree.id))
        *dirs, last = [p for p in path.split("/") if p] or [""]
        for part in dirs:  # not tree[path]: see memory.py
            tree = child(tree, part)
            if tree is None or tree.filemode != TREE:
                return None
        obj = child(tree, last)
        return Entry(obj.name, obj.filemode, str(obj.id)) if obj is not None else None

    def read(self, treeish: str, path: str, limit: int | None = None) -> bytes | None:
        """The content of the file at `path`, or None; with `limit`, its size is asked before it is read
        and TooLarge raised above it (what others pushed may be any size)."""
        entry = self.lookup(treeish, path)
        if entry is None or entry.is_tree or entry.mode == GITLINK:
            return None
        if limit is not None and (size := self.size(entry.oid)) > limit:
            raise TooLarge(size)
        return self.repo[entry.oid].data

    def listdir(self, treeish: str, path: str = "") -> list[Entry]:
        """Entries of the directory at `path` (empty list when missing)."""
        entry = self.lookup(treeish, path)
        if entry is None or not entry.is_tree:
            return []
        return [Entry(o.name, o.filemode, str(o.id)) for o in self.repo[entry.oid]]

    def update_tree(self, base: str | None, changes: Mapping[str, tuple[str, int] | None]) -> str:
        """A new tree: `base` with each path set to (blob oid, mode), or removed when None.

        Only the trees on the changed paths are rewritten, so the cost does not
        depend on how much else the tree holds.
        """
        nested: dict[tuple[str, ...], tuple[str, int] | None] = {}
        for path, value in changes.items():
            parts = tuple(p for p in path.split("/") if p)
            if not parts or any(p in (".", "..") for p in parts):
                raise GitError(f"invalid path in tree: {path!r}")
            nested[parts] = value
        with self.lock:
            return self._update(base, nested)

    def _update(self, base: str | None, changes: dict[tuple[str, ...], tuple[str, int] | None]) -> str:
        repo = self.repo
        old = self.tree(base) if base else None
        tb = repo.TreeBuilder(old) if old is not None else repo.TreeBuilder()
        subdirs: dict[str, dict] = {}
        for parts, value in changes.items():
            if len(parts) == 1:
                if value is None:
                    if old is not None and child(old, parts[0]) is not None:  # not tb.get: see memory.py
                        tb.remove(parts[0])
                else:
                    tb.insert(parts[0], pygit2.Oid(hex=value[0]), value[1])
            else:
                subdirs.setdefault(parts[0], {})[parts[1:]] = value
        for name, sub in subdirs.items():
            existing = None if old is None or (name,) in changes else child(old, name)
            sub_base = str(existing.id) if existing is not None and existing.type == pygit2.GIT_OBJECT_TREE else None
            new = self._update(sub_base, sub)
            if new == EMPTY_TREE:
                if existing is not None:
                    tb.remove(name)
            else:
                tb.insert(name, pygit2.Oid(hex=new), TREE)
        return str(tb.write())

    def first_parent_log(self, start: str | None) -> Iterator[Commit]:
        """Commits from `start` back along first parents, newest first."""
        sha = start
        while sha:
            c = self.get_commit(sha)
            yield c
            sha = c.parents[0] if c.parents else None

    def diff(self, old_tree: str | None, new_tree: str) -> list[Change]:
        """Each entry added, changed or removed from one tree to the next, in path order, with its size."""
        old = self.tree(old_tree) if old_tree else self._empty_tree()
        changes = []
        for delta in self.repo.diff(old, self.tree(new_tree)).deltas:
            if delta.status == pygit2.GIT_DELTA_DELETED:
                status, side = "removed", delta.old_file
            else:
                status = "added" if delta.status == pygit2.GIT_DELTA_ADDED else "changed"
                side = delta.new_file
            changes.append(Change(status, side.path, side.mode, str(side.id), self.size(str(side.id), side.mode)))
        return changes

    def changed_paths(self, old_tree: str | None, new_tree: str) -> tuple[int, int, int]:
        """(changed, added, removed) file counts between two trees."""
        statuses = [c.status for c in self.diff(old_tree, new_tree)]
        return statuses.count("changed"), statuses.count("added"), statuses.count("removed")

    def data(self, oid: str) -> bytes:
        """The content of a blob."""
        return self.repo[oid].data

    def size(self, oid: str, mode: int = FILE) -> int:
        """The size of a blob (0 for a gitlink, whose commit is not here)."""
        if mode == GITLINK:
            return 0
        if oid not in self._sizes:
            if len(self._sizes) >= 4096:  # a daemon reads new blobs for months: keep the recent ones
                self._sizes.clear()
            self._sizes[oid] = self.repo.odb.read_header(oid)[1]
        return self._sizes[oid]

    def tree_size(self, treeish: str) -> tuple[int, int]:
        """(files, bytes) of every blob below a tree."""
        files = total = 0
        stack = [self.tree(treeish)]
        while stack:
            for entry in stack.pop():
                if entry.filemode == TREE:
                    stack.append(self.repo[entry.id])
                elif entry.filemode != GITLINK:
                    files += 1
                    total += self.size(str(entry.id))
        return files, total

    # -- transport (the git binary) -------------------------------------
    def fetch(self, remote: str, refspecs: list[str], *, timeout: float | None = 300) -> None:
        """Fetch `refspecs` from `remote`; raise RemoteMissingRef when a named ref does not exist."""
        transport.fetch(self.git, remote, refspecs, timeout=timeout)

    def fetch_optional(self, remote: str, src: str, dst: str, *, timeout: float | None = 300) -> str | None:
        """Fetch remote ref `src` into local `dst` (forced); None (and `dst` deleted) when the remote lacks it."""
        try:
            self.fetch(remote, [f"+{src}:{dst}"], timeout=timeout)
        except RemoteMissingRef:
            self.delete_ref(dst)
            return None
        return self.ref(dst)

    def push(self, remote: str, refspecs: list[str], *, atomic: bool = False, thin: bool = True,
             timeout: float | None = 300) -> None:
        """Push without force (unless a refspec starts with +); PushRejected when the remote moved.
        `thin=False` sends whole objects: for a few small ones (a record), cheaper than the delta search
        a thin pack does against bases deep in a long history's packs."""
        transport.push(self.git, remote, refspecs, atomic=atomic, thin=thin, timeout=timeout)

    def remote_url(self, name_or_url: str, push: bool = False) -> str:
        """The (push) URL of a configured remote, insteadOf applied; `name_or_url` itself otherwise.

        Transport by URL rather than by remote name keeps git from updating the
        user's remote-tracking refs as a side effect of our pushes.
        """
        if name_or_url not in self.remote_names():
            return name_or_url
        args = ["remote", "get-url"] + (["--push"] if push else []) + [name_or_url]
        return self.git(*args).stdout.decode().strip()

    def remote_names(self) -> list[str]:
        return [r.name for r in self.repo.remotes]

    def config(self, key: str) -> str | None:
        try:
            return self.repo.config[key]
        except KeyError:
            return None
