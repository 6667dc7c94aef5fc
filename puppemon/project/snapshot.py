"""Working tree -> a deploy commit on the `flows` branch of a remote.

A push runs git processes only (gitstore/plumbing.py), never pygit2: its fixed cost is
then the interpreter, click and the manifest's YAML. The fetch of the remote's tip and
`git add` of the working tree start before Python loads the manifest, and the two diffs a
push needs run side by side; every check still comes before anything is pushed, in the
same order. The snapshot's total is its parent's (kept from the push that made it) plus
the diff's, so a push reads the sizes of the files it changes, not of every file.
"""
from __future__ import annotations

import contextlib
import getpass
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from puppemon.errors import PuppemonError
from puppemon.formats import plural
from puppemon.gitstore.command import Background, PushRejected, RemoteMissingRef
from puppemon.gitstore.objects import GITLINK, TREE, Change
from puppemon.gitstore.plumbing import (Checkout, Objects, Totals, blobs, changes, diff, listing, moved, sizes,
                                        total)
from puppemon.gitstore.transport import fetch_args, fetch_result, pick_remote, push_args, push_result
from puppemon.gitstore.worktree import snapshot
from puppemon.project.root import find_root

if TYPE_CHECKING:
    from puppemon.gitstore import Store
    from puppemon.project.manifest import Manifest

PUSH_ATTEMPTS = 5


@dataclass
class Deploy:
    """What `deploy()` did (or, with dry_run, would do)."""

    remote: str
    branch: str
    commit: str | None       # the new flows commit; None when nothing was written
    parent: str | None       # the remote's flows tip it builds on
    tree: str
    flows: int
    changes: list[Change]    # what the new commit changes against `parent`
    total: tuple[int, int]   # (files, bytes) of the whole snapshot; not counted when up to date
    up_to_date: bool
    dry_run: bool
    git_dir: Path | None = None    # of the repository pushed from

    def count(self, status: str) -> int:
        return sum(1 for c in self.changes if c.status == status)

    def summary(self) -> str:
        changed = self.count("changed")
        counts = (f"{plural(self.flows, 'flow')}; {changed} file{'' if changed == 1 else 's'} changed, "
                  f"{self.count('added')} added, {self.count('removed')} removed")
        if self.up_to_date:
            tip = (self.parent or "")[:7]
            return f"flows already up to date ({self.branch} {tip} on {self.remote})"
        if self.dry_run:
            return f"dry run: would push {self.branch} to {self.remote} ({counts})"
        return f"pushed {self.branch} {self.commit[:7]} to {self.remote} ({counts})"


def scratch_ref(branch: str) -> str:
    """A private ref for the fetched tip, deleted after the push: the user's refs stay as they were."""
    return f"refs/puppemon/push/{os.getpid()}-{threading.get_ident()}/{branch}"


def source_info(store: Store) -> tuple[str, str | None]:
    """(branch name, commit sha) of what the working tree is on."""
    repo = store.repo
    commit = None if repo.head_is_unborn else str(repo.head.target)
    if repo.head_is_detached:
        branch = os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or "HEAD"
    else:
        head = repo.references.get("HEAD")
        branch = head.target.removeprefix("refs/heads/") if head is not None else "HEAD"
    return branch, commit


def source_name(branch: str | None) -> str:
    """The branch a deploy names as its source: HEAD's, or on a detached HEAD the one CI checked out."""
    if branch is None:
        return os.environ.get("GITHUB_HEAD_REF") or os.environ.get("GITHUB_REF_NAME") or "HEAD"
    return branch


def deploy_message(branch: str, commit: str | None, dirty: int, extra: str | None) -> str:
    """Subject `deploy main@1a2b3c4 (+2 dirty files)`, optional text, then the trailers."""
    where = f"{branch}@{commit[:7]}" if commit else f"{branch} (no commits)"
    subject = f"deploy {where}" + (f" (+{dirty} dirty file{'s' if dirty != 1 else ''})" if dirty else "")
    lines = [subject, ""]
    if extra:
        lines += [extra.strip(), ""]
    lines += [
        f"Puppemon-Source-Branch: {branch}",
        f"Puppemon-Source-Commit: {commit or 'none'}",
        f"Puppemon-Dirty: {'true' if dirty else 'false'}",
        f"Puppemon-Pushed-By: {user_at_host()}",
    ]
    return "\n".join(lines) + "\n"


def user_at_host() -> str:
    """`name@host` of whoever runs this: the author of deploys, requests and manual runs."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name}@{socket.gethostname() or 'localhost'}"


def check_manifest(files: Objects, tree: str, read: tuple[bytes, Manifest] | None = None) -> int:
    """Validate the manifest and its entrypoints as they are in `tree` (what the daemon will read);
    return the flow count. `read` is the file's bytes and the manifest parsed from them, used again
    when the tree holds those same bytes."""
    from puppemon.project.entrypoints import check_manifest as check_entrypoints, tree_reader
    from puppemon.project.manifest import MANIFEST_NAME, parse

    entry = files.lookup(tree, MANIFEST_NAME)
    if entry is None or entry.mode in (TREE, GITLINK):
        raise PuppemonError(f"{MANIFEST_NAME} is ignored by git (.gitignore or info/exclude), so it "
                            f"would not be deployed; stop ignoring it")
    data = files.data(entry.oid)
    manifest = read[1] if read is not None and read[0] == data else parse(data, MANIFEST_NAME)
    check_entrypoints(manifest, tree_reader(files, tree), MANIFEST_NAME,
                      "the snapshot (is it ignored by .gitignore?)")
    return len(manifest.flows)


@dataclass
class Request:
    """What a push is asked to do."""

    directory: Path
    remote: str
    branch: str = "flows"
    message: str | None = None
    dry_run: bool = False
    allow: tuple[str, ...] = ()          # files deployed knowingly though they look like secrets
    log: Callable[[str], None] = lambda _msg: None


def deploy(directory: str | os.PathLike, remote: str | None = None, branch: str = "flows",
           message: str | None = None, dry_run: bool = False,
           log: Callable[[str], None] = lambda _msg: None, allow: tuple[str, ...] = ()) -> Deploy:
    """Snapshot `directory` and push it as a new commit on the remote's `branch`.

    Nothing is written when the snapshot holds what looks like secrets (safety.py);
    its warnings go to `log`."""
    found = Background(Checkout.discover, directory)
    directory = find_root(directory)
    try:
        checkout = found.result()
        request = Request(directory, pick_remote(remote, checkout.remote_names(), _upstream(checkout)), branch,
                          message, dry_run, tuple(allow), log)
    except PuppemonError:
        _read(directory)      # an invalid manifest is said first, as `validate` says it
        raise
    push = Push(checkout, request)
    push.start()     # the fetch and the snapshot run while Python loads and checks the manifest
    try:
        read = _read(directory)   # refuse an invalid manifest (same message as `validate`) before writing
    except BaseException:
        push.close()
        raise
    return push.run(read)


def _upstream(checkout: Checkout) -> str | None:
    return checkout.get(f"branch.{checkout.branch}.remote") if checkout.branch else None


def _read(directory: Path) -> tuple[bytes, Manifest]:
    """The project's puppemon.yaml: its bytes, and the manifest they validate as."""
    from puppemon.project.manifest import parse, read

    data = read(directory)
    return data, parse(data)


class Push:
    """One `puppemon push`: the git processes it has running and what they answered."""

    def __init__(self, checkout: Checkout, request: Request) -> None:
        self.checkout, self.request = checkout, request
        self.local = scratch_ref(request.branch)
        self.said: set[str] = set()
        self.fetched = False                    # the scratch ref may exist: delete it at the end
        self.deleting: Background | None = None
        self.objects: Objects | None = None
        self.fetching: Background | None = None
        self.snapshot: Background | None = None

    def _fetch_args(self) -> list[str]:
        src = f"refs/heads/{self.request.branch}"
        # a URL, or a name with an empty refmap: either way git updates none of the user's own refs
        return [*fetch_args(self.request.remote, [f"+{src}:{self.local}"]), "--refmap="]

    def _tip(self, proc) -> tuple[str, str] | None:
        """(commit, tree) the fetch put in the scratch ref; None when the remote has no such branch."""
        remote = self.request.remote
        if proc.returncode != 0 and remote in self.checkout.remote_names():
            # say which URL failed, as when fetching by URL; looked up only when there is an error to tell
            url = self.checkout.git("remote", "get-url", remote, check=False).stdout.decode().strip()
            remote = url.splitlines()[0] if url else remote
        try:
            fetch_result(proc, remote)
        except RemoteMissingRef:
            return None
        self.fetched = True
        assert self.objects is not None
        return self.objects.commit_tree(self.local)

    def start(self) -> None:
        """Start fetching the remote's tip and snapshotting the working tree (git add) side by side."""
        self.fetching = self.checkout.background(*self._fetch_args(), check=False)
        self.fetched = True      # from now on the scratch ref may exist
        self.snapshot = Background(snapshot, self.checkout, self.request.directory)

    def run(self, read: tuple[bytes, Manifest]) -> Deploy:
        """Check the snapshot against the manifest `read` from the project, then commit and push it."""
        checkout, request = self.checkout, self.request
        assert self.fetching is not None and self.snapshot is not None, "start() first"
        named = request.remote in checkout.remote_names()
        url = checkout.push_url(request.remote) if named else request.remote
        push_url = checkout.background("remote", "get-url", "--push", request.remote) if not url else None
        try:
            tree = self.snapshot.result()
            self.objects = files = Objects(checkout)
            flows = check_manifest(files, tree, read)
            for path in request.allow:
                if files.lookup(tree, path) is None:
                    raise PuppemonError(f"--allow {path}: no such file in the snapshot (give its path from the "
                                        f"project directory, as `puppemon push --dry-run` lists it)")
            tip = self._tip(self.fetching.result())
            url = url or push_url.result().stdout.decode().splitlines()[0]
            result = self._publish(tree, flows, tip, url)
            result.git_dir = checkout.git_dir
            return result
        finally:
            self.close()

    def _publish(self, tree: str, flows: int, tip: tuple[str, str] | None, url: str) -> Deploy:
        request, checkout = self.request, self.checkout
        remote, branch = request.remote, request.branch
        dirty: Background | None = None
        listed: Background | None = None
        totals = Totals(checkout.git_dir)
        for attempt in range(1, PUSH_ATTEMPTS + 1):
            parent, parent_tree = tip or (None, None)
            if parent_tree == tree:
                return Deploy(remote, branch, None, parent, tree, flows, [], (0, 0), up_to_date=True,
                              dry_run=request.dry_run)
            dirty = dirty or (None if request.dry_run else self._dirty(tree))
            diffing = diff(checkout, parent_tree, tree)
            base = (0, 0) if parent_tree is None else totals.get(parent_tree)
            if base is None and listed is None:       # every blob's size, only when the parent's total is not known
                listed = listing(checkout, tree)
            found = diffing.result().stdout
            named = blobs(found)
            known = sizes(checkout, named)
            if base is not None and len(known) < len(named):   # a blob this repository lacks: count the tree
                base, listed = None, listed or listing(checkout, tree)
            files = moved(base, found, known) if base is not None else total(listed.result().stdout)
            totals.add(tree, files)
            result = Deploy(remote, branch, None, parent, tree, flows, changes(found, known), files,
                            up_to_date=False, dry_run=request.dry_run)
            assert self.objects is not None
            _review(self.objects, request, result, self.said)  # again after a retry: its parent moved
            if request.dry_run:
                return result
            result.commit = self._commit(tree, parent, dirty.result())
            self.deleting, self.fetched = checkout.background("update-ref", "-d", self.local, check=False), False
            try:
                push_result(checkout.git(*push_args(url, [f"{result.commit}:refs/heads/{branch}"]), check=False),
                            url)
            except PushRejected:
                if attempt == PUSH_ATTEMPTS:
                    raise PuppemonError(f"{branch} on {remote} kept moving while pushing "
                                        f"({PUSH_ATTEMPTS} tries); try again") from None
                request.log(f"{branch} on {remote} moved while pushing; rebuilding on the new tip")
                time.sleep(0.2 * attempt)
                self.deleting.result()
                tip = self._tip(checkout.git(*self._fetch_args(), check=False))
                continue
            return result
        raise AssertionError("unreachable")

    def _dirty(self, tree: str) -> Background:
        """Start counting the files the snapshot changes against HEAD: (HEAD commit, count)."""
        assert self.objects is not None
        head = None if self.checkout.unborn else self.objects.commit_tree("HEAD")
        rel = os.path.relpath(self.request.directory, self.checkout.workdir.resolve())
        base = None
        if head is not None:
            found = self.objects.get(head[1] + ("" if rel == "." else ":" + Path(rel).as_posix()))
            base = found[0] if found and found[1] == "tree" else None
        return Background(_counted, head[0] if head else None, diff(self.checkout, base, tree))

    def _commit(self, tree: str, parent: str | None, dirty: tuple[str | None, int]) -> str:
        head, count = dirty
        message = deploy_message(source_name(self.checkout.branch), head, count, self.request.message)
        args = ["commit-tree", tree] + (["-p", parent] if parent else [])
        proc = self.checkout.git(*args, input=message.encode(), env=self.checkout.identity())
        return proc.stdout.decode().strip()

    def close(self) -> None:
        """Wait for what is still running and delete the scratch ref (an error is said already, or beside
        the point of the one on its way)."""
        for running in (self.fetching, self.snapshot):
            if running is not None:
                with contextlib.suppress(Exception):
                    running.result()
        if self.objects is not None:
            self.objects.close()
        if self.deleting is not None:
            self.deleting.result()
        if self.fetched:
            self.checkout.git("update-ref", "-d", self.local, check=False)
            self.fetched = False


def _counted(head: str | None, found: Background) -> tuple[str | None, int]:
    """(head, how many paths a diff-tree names), a type change counting twice as libgit2 counts it."""
    parts = found.result().stdout.split(b"\0")
    return head, sum(2 if meta.endswith(b" T") else 1 for meta in parts[0::2] if meta)


def _review(objects: Objects, request: Request, result: Deploy, said: set[str]) -> None:
    """Warn (once each) and refuse as safety.py says, for what this push changes against its parent."""
    from puppemon.project.safety import refusal, review

    found = review(objects, result.changes, result.total, request.allow)
    for warning in found.warnings:
        if warning not in said:
            said.add(warning)
            request.log(f"warning: {warning}")
    if found.refused:
        raise refusal(found.refused)


def snapshot_tree(directory: str | os.PathLike) -> str:
    """The tree `deploy` would push for `directory` now (no validation, nothing written to refs)."""
    directory = find_root(directory)
    return snapshot(Checkout.discover(directory), directory)


__all__ = ["Deploy", "deploy", "snapshot_tree", "user_at_host"]
