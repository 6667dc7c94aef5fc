"""Working tree -> a deploy commit on the `flows` branch of a remote."""
from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from puppemon.errors import PuppemonError
from puppemon.formats import plural
from puppemon.gitstore import Change, PushRejected, Store
from puppemon.gitstore.worktree import snapshot

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


def resolve_remote(store: Store, remote: str | None) -> str:
    """The remote to push to: the one given, else the current branch's upstream remote, else origin."""
    if remote:
        return remote
    names = store.remote_names()
    head = store.repo.references.get("HEAD")
    branch = head.target.removeprefix("refs/heads/") if head is not None and isinstance(head.target, str) else None
    upstream = store.config(f"branch.{branch}.remote") if branch else None
    if upstream and upstream in names:
        return upstream
    if "origin" in names:
        return "origin"
    if len(names) == 1:
        return names[0]
    raise PuppemonError("no remote to push to; pass --remote NAME|URL, or add one with "
                        "`git remote add origin URL`")


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


def deploy_message(store: Store, directory: Path, tree: str, extra: str | None) -> str:
    """Subject `deploy main@1a2b3c4 (+2 dirty files)`, optional text, then the trailers."""
    branch, commit = source_info(store)
    dirty = 0
    if commit:
        rel = os.path.relpath(directory, store.workdir.resolve())
        entry = store.lookup(commit, "" if rel == "." else Path(rel).as_posix())
        base = entry.oid if entry is not None and entry.is_tree else None
        dirty = sum(store.changed_paths(base, tree))
    else:
        dirty = sum(store.changed_paths(None, tree))
    where = f"{branch}@{commit[:7]}" if commit else f"{branch} (no commits)"
    subject = f"deploy {where}" + (f" (+{dirty} dirty file{'s' if dirty != 1 else ''})" if dirty else "")
    user = user_at_host()
    lines = [subject, ""]
    if extra:
        lines += [extra.strip(), ""]
    lines += [
        f"Puppemon-Source-Branch: {branch}",
        f"Puppemon-Source-Commit: {commit or 'none'}",
        f"Puppemon-Dirty: {'true' if dirty else 'false'}",
        f"Puppemon-Pushed-By: {user}",
    ]
    return "\n".join(lines) + "\n"


def user_at_host() -> str:
    """`name@host` of whoever runs this: the author of deploys, requests and manual runs."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"{name}@{socket.gethostname() or 'localhost'}"


def check_manifest(store: Store, tree: str) -> int:
    """Validate the manifest and its entrypoints as they are in `tree` (what the daemon will read);
    return the flow count."""
    from puppemon.project.entrypoints import check_manifest as check_entrypoints, tree_reader
    from puppemon.project.manifest import MANIFEST_NAME, parse

    data = store.read(tree, MANIFEST_NAME)
    if data is None:
        raise PuppemonError(f"{MANIFEST_NAME} is ignored by git (.gitignore or info/exclude), so it "
                            f"would not be deployed; stop ignoring it")
    manifest = parse(data, MANIFEST_NAME)
    check_entrypoints(manifest, tree_reader(store, tree), MANIFEST_NAME,
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
    from puppemon.project.manifest import find_root, load

    directory = find_root(directory)
    load(directory)  # refuse an invalid manifest (same message as `validate`) before writing
    store = Store.discover(directory)
    request = Request(directory, resolve_remote(store, remote), branch, message, dry_run, tuple(allow), log)
    tree = snapshot(store, directory)
    flows = check_manifest(store, tree)
    for path in request.allow:
        if store.lookup(tree, path) is None:
            raise PuppemonError(f"--allow {path}: no such file in the snapshot (give its path from the "
                                f"project directory, as `puppemon push --dry-run` lists it)")
    local = scratch_ref(branch)
    try:
        return _publish(store, request, local, tree, flows)
    finally:
        store.delete_ref(local)


def _review(store: Store, request: Request, result: Deploy, said: set[str]) -> None:
    """Warn (once each) and refuse as safety.py says, for what this push changes against its parent."""
    from puppemon.project.safety import refusal, review

    found = review(store, result.changes, result.total, request.allow)
    for warning in found.warnings:
        if warning not in said:
            said.add(warning)
            request.log(f"warning: {warning}")
    if found.refused:
        raise refusal(found.refused)


def _publish(store: Store, request: Request, local: str, tree: str, flows: int) -> Deploy:
    remote, branch, log = request.remote, request.branch, request.log
    fetch_url, push_url = store.remote_url(remote), None
    said: set[str] = set()
    for attempt in range(1, PUSH_ATTEMPTS + 1):
        parent = store.fetch_optional(fetch_url, f"refs/heads/{branch}", local)
        parent_tree = store.get_commit(parent).tree if parent else None
        if parent_tree == tree:
            return Deploy(remote, branch, None, parent, tree, flows, [], (0, 0), up_to_date=True,
                          dry_run=request.dry_run)
        result = Deploy(remote, branch, None, parent, tree, flows, store.diff(parent_tree, tree),
                        store.tree_size(tree), up_to_date=False, dry_run=request.dry_run)
        _review(store, request, result, said)  # again after a retry: the parent it builds on moved
        if request.dry_run:
            return result
        msg = deploy_message(store, request.directory, tree, request.message)
        result.commit = store.commit(tree, [parent] if parent else [], msg, store.default_signature())
        try:
            push_url = push_url or store.remote_url(remote, push=True)
            store.push(push_url, [f"{result.commit}:refs/heads/{branch}"])
        except PushRejected:
            if attempt == PUSH_ATTEMPTS:
                raise PuppemonError(f"{branch} on {remote} kept moving while pushing "
                                    f"({PUSH_ATTEMPTS} tries); try again") from None
            log(f"{branch} on {remote} moved while pushing; rebuilding on the new tip")
            time.sleep(0.2 * attempt)
            continue
        return result
    raise AssertionError("unreachable")


def snapshot_tree(directory: str | os.PathLike) -> str:
    """The tree `deploy` would push for `directory` now (no validation, nothing written to refs)."""
    from puppemon.project.manifest import find_root

    directory = find_root(directory)
    return snapshot(Store.discover(directory), directory)


__all__ = ["Deploy", "deploy", "snapshot_tree", "resolve_remote", "user_at_host"]
