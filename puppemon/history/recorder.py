"""The one writer of the runs branch: commit locally, then publish to the remote without force.

Every writer (the CLI, the daemon, `trigger`) goes through a Recorder. A record is
first a commit on the local runs ref (compare-and-swap), so it is never lost; then
`publish()` fetches the remote's runs, replays the local-only commits onto it when
it moved, and pushes as a fast-forward. Records never collide; a commit that writes a
path the remote already holds with other content (two daemons claiming one request)
is dropped on replay: the first pushed wins. When the remote
cannot be reached the records wait locally and go out on the next publish.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import fcntl
import os
import random
import threading
import time
from typing import Callable, Iterator, Mapping

from puppemon.errors import PuppemonError
from puppemon.formats import ARCHIVE_PREFIX, plural
from puppemon.gitstore import FILE, GitError, PushRejected, RefConflict, RemoteMissingRef, Store, signature
from puppemon.history import layout

log = logging.getLogger("puppemon")

ARCHIVES = f"+{ARCHIVE_PREFIX}*:{ARCHIVE_PREFIX}*"  # history/rotation.py: always what the remote has
PATIENCE = 10.0  # seconds a publish keeps trying while other writers keep moving the remote's runs
# Commits walked back from the local and the remote tip to find where they part (`Recorder._fork`)
# before libgit2 is asked, whose merge base and ahead/behind walk the whole history here (many
# commits a second share a commit time): 30 ms at 2,000 records, more with each one.
WALK = 2000

Files = Mapping[str, "bytes | tuple[bytes, int] | None"]
Changes = Mapping[str, "tuple[str, int] | None"]    # path -> (oid, mode), or None to delete


class RecordWriteError(GitError):
    """The local repository could not be written (a full disk, a quota, a read-only file system)."""


def disk_words(exc: OSError) -> str:
    """What an OSError from writing to disk means, in words a log line can say ("no space left on device").

    pygit2 raises OSError without an errno ("failed to write out file: No space left on device")."""
    text = str(exc)
    for code in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO):
        if exc.errno == code or os.strerror(code) in text:
            return os.strerror(code).lower()
    return exc.strerror or text


@contextlib.contextmanager
def writer_lock(store: Store, patience: float) -> Iterator[None]:
    """Hold the lock that makes the puppemon commands of one checkout write its runs branch one at a time.

    Without it, two commands in one checkout move the same local ref and tracking ref
    under each other (a lost update, or an error for a request that went out)."""
    path = store.git_dir / "puppemon-runs.lock"
    deadline = time.monotonic() + patience
    try:
        fh = open(path, "a")
    except OSError:  # a repository we cannot write: the commit itself will say so
        yield
        return
    with fh:
        while True:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise PuppemonError(f"another puppemon command kept {path} locked for {patience:g}s; "
                                        f"try again when it has finished") from None
                time.sleep(random.uniform(0.02, 0.1))
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class Recorder:
    """Commits records to a local runs ref and publishes them to a remote."""

    def __init__(self, store: Store, remote: str | None = None, branch: str = "runs",
                 tracking: str | None = None, author_name: str = "puppemon",
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.store = store
        self.remote = remote
        self.branch = branch
        self.ref = f"refs/heads/{branch}"
        if tracking is None:
            named = remote is not None and remote in store.remote_names()
            tracking = f"refs/remotes/{remote}/{branch}" if named else f"refs/puppemon/remote/{branch}"
        self.tracking = tracking
        self.author = signature(author_name)
        self.sleep = sleep
        self._lock = threading.Lock()
        self.dropped: list[str] = []  # messages of local commits dropped by replay (first pushed wins)

    # -- local ---------------------------------------------------------------
    def add(self, files: Files | Callable[[str | None], Changes], message: str) -> str:
        """Commit `files` (path -> bytes or (bytes, mode), or None to delete) on the local runs ref; or
        the changes (path -> (oid, mode) or None) that `files(tip)` makes, for changes that depend on
        the tip they are made on (called again if another writer moved it).

        RecordWriteError when the repository cannot be written (the disk is full): nothing was committed."""
        try:
            return self._add(files, message)
        except OSError as exc:
            raise RecordWriteError(f"cannot write to {self.store.git_dir}: {disk_words(exc)}") from None

    def _add(self, files: Files | Callable[[str | None], Changes], message: str) -> str:
        blobs: Changes = {}
        for path, value in ({} if callable(files) else files).items():
            if value is None:
                blobs[path] = None
                continue
            data, mode = value if isinstance(value, tuple) else (value, FILE)
            blobs[path] = (self.store.blob(data), mode)
        with self._lock:
            for _ in range(20):
                tip = self.store.ref(self.ref)
                base_tree = self.store.get_commit(tip).tree if tip else None
                tree = self.store.update_tree(base_tree, files(tip) if callable(files) else blobs)
                commit = self.store.commit(tree, [tip] if tip else [], message, self.author)
                try:
                    self.store.set_ref(self.ref, commit, tip, message=message.splitlines()[0])
                    return commit
                except RefConflict:
                    continue  # another process committed a record in between; build on it
        raise PuppemonError(f"could not commit to {self.ref}: it kept changing under us")

    def withdraw(self, commit: str) -> bool:
        """Take back the local record `commit` if nothing was committed after it and it is not published
        (a claim that could not reach the remote must not go out later); True when it was."""
        with self._lock:
            if self.store.ref(self.ref) != commit or self.store.ref(self.tracking) == commit:
                return False
            parents = self.store.get_commit(commit).parents
            if parents:
                self.store.set_ref(self.ref, parents[0], commit, message="withdraw a record")
            else:
                self.store.delete_ref(self.ref)
            return True

    def unpublished(self) -> int:
        """How many local records the remote has not got yet (as far as we last saw it)."""
        local, remote = self.store.ref(self.ref), self.store.ref(self.tracking)
        if not local:
            return 0
        if not remote:
            return sum(1 for _ in self.store.first_parent_log(local))
        fork = self._fork(local, remote)
        return fork[1] if fork is not None else self.store.ahead_behind(local, remote)[0]

    def _fork(self, local: str, remote: str) -> tuple[str | None, int] | None:
        """(the last commit `local` and `remote` share, how many commits `local` has after it), found by
        walking first parents back from both tips in step; None when WALK commits or a merge came first.

        The runs branch is linear (records are replayed, never merged), so where the two walks
        meet is the merge base; a merge commit (written by hand) leaves it to libgit2."""
        local_at: dict[str, int] = {}
        remote_seen: set[str] = set()
        a, b = local, remote
        for step in range(WALK):
            if a is None and b is None:
                return None, len(local_at)  # no commit in common
            if a is not None:
                if a in remote_seen:
                    return a, step
                local_at[a] = step
                a = self._parent(a)
            if b is not None:
                if b in local_at:
                    return b, local_at[b]
                remote_seen.add(b)
                b = self._parent(b)
            if a is False or b is False:
                return None
        return None

    def _parent(self, sha: str) -> str | None | bool:
        """The parent of `sha`, None for a root commit, False for a merge."""
        parents = self.store.get_commit(sha).parents
        return parents[0] if len(parents) == 1 else (None if not parents else False)

    # -- remote --------------------------------------------------------------
    def fetch(self, archives: bool = True) -> str | None:
        """Fetch the remote's runs into the tracking ref, and (unless not asked) its archive refs (rotated
        days) as they are; return the runs tip (None when it has none)."""
        if self.remote is None:
            return None
        try:
            self.store.fetch(self.remote, [f"+{self.ref}:{self.tracking}", *([ARCHIVES] if archives else [])])
        except RemoteMissingRef:
            self.store.delete_ref(self.tracking)
            return None
        return self.store.ref(self.tracking)

    def sync(self, push: bool = True, patience: float = PATIENCE) -> bool:
        """Bring the local ref and the remote together; True when the remote has every local record.

        A push that loses a race with another writer is tried again after a random pause
        (jitter, so writers that collided do not collide again in step) for `patience` seconds.
        Raises GitError when the remote cannot be reached
        or kept moving, LayoutError (with `push`) when its layout is newer than this version knows, RecordWriteError when the local repository cannot be written: records
        stay queued locally either way.
        """
        if self.remote is None:
            return True
        try:
            return self._sync(push, time.monotonic() + patience)
        except OSError as exc:
            raise RecordWriteError(f"cannot write to {self.store.git_dir}: {disk_words(exc)}") from None

    def _sync(self, push: bool, deadline: float) -> bool:
        delay, attempt, started = 0.2, 0, time.monotonic()
        while True:
            attempt += 1
            with self._lock:
                fetched = self.store.ref(self.tracking)  # before the fetch force-updates it
                remote_tip = self.fetch(archives=not push)  # publishing reads no archive
                if push:  # a layout this version does not know: nothing goes out (history/layout.py)
                    layout.check(self.store, remote_tip, f"runs on {self.remote}")
                local_tip = self.store.ref(self.ref)
                new_tip = self._integrate(local_tip, remote_tip, fetched)
                if new_tip is None or new_tip == remote_tip:
                    return True
                if not push:
                    return False
                try:
                    self.store.push(self.remote, [f"{new_tip}:{self.ref}"], thin=False)
                except PushRejected:
                    log.debug("runs on %s moved while publishing (attempt %d)", self.remote, attempt)
                else:
                    self.store.force_ref(self.tracking, new_tip)
                    return True
            if time.monotonic() >= deadline:
                break
            self.sleep(random.uniform(0.05, delay))
            delay = min(delay * 2, 2.0)
        raise GitError(f"could not publish runs to {self.remote}: it kept moving "
                       f"({plural(attempt, 'try', 'tries')} in {time.monotonic() - started:.0f}s)")

    def publish(self) -> bool:
        """Push queued records; False (and a log line) when the remote is unreachable."""
        try:
            return self.sync(push=True)
        except GitError as exc:
            log.warning("records kept locally (%d unpublished): %s", self.unpublished(), exc.message)
            return False

    def _integrate(self, local: str | None, remote: str | None, fetched: str | None = None) -> str | None:
        """Make the local ref contain the remote's history plus local-only records; return it.

        `fetched` is the remote's tip as last fetched: when the remote's history no longer
        contains it (a purge rewrote it), the local-only records are the commits after it."""
        store = self.store
        if remote is None:
            return local
        if local is None or local == remote:
            if local is None:
                store.set_ref(self.ref, remote, None, message="fetch runs")
            return remote
        if fetched and fetched != remote and self._merge_base(fetched, remote) != fetched \
                and self._on_first_parents(local, fetched):
            # Merging with the old history would bring back every purged record: only what
            # the remote never had is replayed, onto the rewritten history.
            log.info("runs on %s was rewritten (purged): replaying only the records it never had", self.remote)
            base = fetched
        else:
            base = self._merge_base(local, remote)
        if base == local:  # nothing local-only: fast-forward (or take the rewritten history)
            store.set_ref(self.ref, remote, local, message="fetch runs")
            return remote
        if base == remote:  # only local-only records: push as is
            return local
        # Both moved: replay the local-only commits, oldest first, onto the remote tip.
        pending = []
        for commit in store.first_parent_log(local):
            if commit.sha == base:
                break
            pending.append(commit)
        tip = remote
        for commit in reversed(pending):
            parent_tree = store.get_commit(commit.parents[0]).tree if commit.parents else None
            changes = store.tree_changes(parent_tree, commit.tree)
            tip_tree = store.get_commit(tip).tree
            if self._collides(tip_tree, changes, parent_tree):
                # Someone else wrote the same path first (a claim on a request, a
                # "done" marker): the first pushed wins and this commit is dropped.
                subject = commit.message.splitlines()[0] if commit.message else commit.sha
                if "\nPuppemon-Fire: " in commit.message:  # a fire's claim: its claimer says so (daemon/claims.py)
                    log.debug("another daemon took it first (%s on %s)", subject, self.remote)
                elif "\nPuppemon-Claim: " in commit.message:  # the normal end of a race between daemons
                    log.info("another daemon took it first (%s on %s): not ours to run", subject, self.remote)
                else:
                    log.info("dropped local record %r: %s already has it with other content",
                             subject, self.remote)
                self.dropped.append(commit.message)
                continue
            tree = store.update_tree(tip_tree, changes)
            tip = store.commit(tree, [tip], commit.message, store.author_of(commit.sha), self.author)
        store.set_ref(self.ref, tip, local, message=f"replay {plural(len(pending), 'record')} onto {self.remote}")
        return tip

    def _merge_base(self, a: str, b: str) -> str | None:
        fork = self._fork(a, b)
        return fork[0] if fork is not None else self.store.merge_base(a, b)

    def _on_first_parents(self, local: str, sha: str) -> bool:
        return any(commit.sha == sha for commit in self.store.first_parent_log(local))

    def _collides(self, tree: str, changes: Mapping[str, "tuple[str, int] | None"],
                  parent_tree: str | None = None) -> bool:
        """True when a path `changes` writes already exists in `tree` with other content that someone
        else wrote: a file the commit overwrites (control/) collides only when `tree` no longer holds
        what the commit's parent (`parent_tree`) had there."""
        for path, value in changes.items():
            entry = self.store.lookup(tree, path)
            # a deletion (retention) never collides: gone is gone, whoever got there first
            if entry is None or value is None or (entry.oid, entry.mode) == tuple(value):
                continue
            before = self.store.lookup(parent_tree, path) if parent_tree else None
            if before is None or (before.oid, before.mode) != (entry.oid, entry.mode):
                return True
        return False

