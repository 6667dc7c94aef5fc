"""Rotation: closed days leave the runs tip for their month's archive ref; nothing is rewritten or forced.

Pushing one commit costs git a walk of its parent's whole tree (the connectivity check), so
a tip that holds every record makes each publish dearer as history grows. Once the tip holds
ROTATE_AFTER or more entries of closed days, a daemon moves those days into
`refs/puppemon/archive/<yyyy>-<mm>`: first it pushes, as a fast-forward, a commit on the
month's archive ref whose tree is the archive's plus those days (the same paths as on runs,
so `git show <archive>:runs/<flow>/...` reads a record); then it commits their removal from
the tip like any record. A record is therefore always in the tree of some ref's tip, and an
archive ref costs a push of runs nothing.

Requests and claims stay on the tip for the days the request server reads back (DAYS). A
record written into a day after it rotated (a run that finished after midnight) lands on
the tip again and follows at the next rotation. Two daemons rotating at once: the second's
archive push is refused; it fetches the archive, merges and pushes again, or finds its days
already there. Archive refs change only by a push that the remote accepted: the local ones
are always what the remote had.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Mapping

from puppemon.formats import ARCHIVE_PREFIX, archive_ref, plural
from puppemon.gitstore import GitError, PushRejected, Store, signature
from puppemon.history.recorder import ARCHIVES, Changes, Recorder
from puppemon.history.requests import DAYS
from puppemon.history.retention import Pruned, dated_dirs, plan as prune_plan

log = logging.getLogger("puppemon")

ROTATE_AFTER = 500   # entries of closed days (runs, request and deploy files) the tip may hold (the daemon's
                     # default is puppemon.daemon.ROTATE_AFTER)
KEPT_DAYS = {"requests": DAYS + 1, "claims": DAYS + 1}   # read back by the request server: kept longer
TRIES = 8            # archive pushes refused because another writer moved the archive
AUTHOR = signature("puppemon")



@dataclass
class Rotation:
    tip: str                                                  # the runs tip it was planned on
    moves: dict[str, list[str]] = field(default_factory=dict)  # archive ref -> dated directories
    runs: int = 0
    other: int = 0                                            # request, deploy and claim files

    @property
    def paths(self) -> list[str]:
        return [path for paths in self.moves.values() for path in paths]

    def summary(self) -> str:
        what = plural(self.runs, "run")
        if self.other:
            what += f" and {plural(self.other, 'request/deploy file')}"
        months = ", ".join(ref.removeprefix(ARCHIVE_PREFIX) for ref in sorted(self.moves))
        return f"{what} of {plural(len(self.paths), 'closed day directory', 'closed day directories')} ({months})"


def plan(store: Store, tip: str | None, now: datetime, rotate_after: int = ROTATE_AFTER) -> Rotation | None:
    """What rotating `tip` at `now` would move, or None while the tip holds fewer than `rotate_after`
    entries of closed days (UTC days before today; for requests and claims, before the days read back)."""
    if not tip:
        return None
    today = now.astimezone(timezone.utc).date()
    rotation = Rotation(tip)
    for base, when, path in dated_dirs(store, tip):
        if when > today - timedelta(days=KEPT_DAYS.get(base, 1)):
            continue
        count = len(store.listdir(tip, path))
        if base.startswith("runs/"):
            rotation.runs += count
        else:
            rotation.other += count
        rotation.moves.setdefault(archive_ref(f"{when:%Y/%m/%d}"), []).append(path)
    return rotation if rotation.moves and rotation.runs + rotation.other >= rotate_after else None


def merged(store: Store, archive_tree: str | None, tip: str, paths: list[str]) -> dict[str, tuple[str, int]]:
    """The changes that put `paths` of `tip` into `archive_tree`: whole directories where the archive
    has none, entry by entry where it has one (what was written after an earlier rotation)."""
    changes: dict[str, tuple[str, int]] = {}

    def merge(path: str) -> None:
        new = store.lookup(tip, path)
        old = store.lookup(archive_tree, path) if archive_tree else None
        if new is None or (old is not None and (old.oid, old.mode) == (new.oid, new.mode)):
            return
        if old is not None and old.is_tree and new.is_tree:
            for entry in store.listdir(tip, path):
                merge(f"{path}/{entry.name}")
        else:
            changes[path] = (new.oid, new.mode)

    for path in paths:
        merge(path)
    return changes


def update_archives(store: Store, remote: str | None, changes: Mapping[str, Callable[[str | None], Changes]],
                    messages: Mapping[str, str], sleep: Callable[[float], None] = time.sleep) -> list[str]:
    """For each archive ref, commit `changes[ref](archive tree)` on it, and push them all as fast-forwards
    in one atomic push (one walk of what the remote has, however many months), before anything relies
    on them; when another writer moved one, fetch the archives and do it again. The refs changed
    (none when there was nothing to change). Raises GitError when the remote cannot be reached
    (nothing changed here)."""
    for _ in range(TRIES):
        commits = {}
        for ref, change in changes.items():
            base = store.ref(ref)
            base_tree = store.get_commit(base).tree if base else None
            if made := change(base_tree):
                tree = store.update_tree(base_tree, made)
                commits[ref] = store.commit(tree, [base] if base else [], messages[ref], AUTHOR)
        if not commits:
            return []
        if remote is not None:
            try:
                store.push(remote, [f"{commit}:{ref}" for ref, commit in commits.items()], atomic=True, thin=False)
            except PushRejected:
                store.fetch(remote, [ARCHIVES])
                sleep(random.uniform(0.05, 0.3))
                continue
        for ref, commit in commits.items():
            store.force_ref(ref, commit)
        return list(commits)
    raise GitError(f"could not update the archive refs on {remote}: other writers kept moving them")


def rotate(store: Store, recorder: Recorder, now: datetime, rotate_after: int = ROTATE_AFTER) -> Rotation | None:
    """Rotate the closed days of the recorder's local runs tip into their archives (pushed first), then
    commit their removal on the runs ref; the recorder's next publish pushes it. None when not due."""
    rotation = plan(store, store.ref(recorder.ref), now, rotate_after)
    if rotation is None:
        return None
    tip = rotation.tip
    update_archives(store, recorder.remote,
                    {ref: lambda tree, paths=paths: merged(store, tree, tip, paths) for ref, paths in rotation.moves.items()},
                    {ref: archive_message(rotation, ref) for ref in rotation.moves})
    recorder.add(lambda current: archived(store, tip, current, rotation.paths), rotation_message(rotation))
    return rotation


def archived(store: Store, planned: str, current: str | None, paths: list[str]) -> Changes:
    """Removing `paths` (as they were at the `planned` tip, now archived) from the `current` tip: a
    directory unchanged since goes as a whole; one written into since, entry by entry, so what was
    written stays."""
    gone: dict[str, None] = {}
    for path in paths:
        now = store.lookup(current, path) if current else None
        if now is not None and now == store.lookup(planned, path):
            gone[path] = None
        elif now is not None:
            gone.update({f"{path}/{entry.name}": None for entry in store.listdir(planned, path)})
    return gone


def prune_archives(store: Store, remote: str | None, before: datetime, dry_run: bool = False) -> Pruned:
    """Take what is dated before `before` out of every archive's tip too (its history keeps it);
    each archive is pushed before the runs tip is pruned. What was (or, with `dry_run`, would be) taken."""
    total = Pruned(before.astimezone(timezone.utc).date(), 0, 0, [])
    found = {}
    for ref, sha in sorted(store.refs(ARCHIVE_PREFIX).items()):
        if ref > archive_ref(f"{total.before:%Y/%m}"):
            break   # a month's archive holds only that month's days: none of these is old enough
        if (pruned := prune_plan(store, sha, before)).paths:
            found[ref] = pruned
    if found and not dry_run:
        done = update_archives(store, remote, {ref: lambda tree: {p: None for p in prune_plan(store, tree, before).paths}
                                               if tree else {} for ref in found},
                               {ref: f"prune: {pruned.summary()} (still in history)\n" for ref, pruned in found.items()})
        found = {ref: found[ref] for ref in done}
    for pruned in found.values():
        total.runs, total.other = total.runs + pruned.runs, total.other + pruned.other
        total.paths += pruned.paths
    return total


def archive_message(rotation: Rotation, ref: str) -> str:
    days = sorted({"-".join(path.split("/")[-3:]) for path in rotation.moves[ref]})
    return (f"archive {plural(len(days), 'day')} from runs ({days[0]} to {days[-1]})\n\n"
            f"Puppemon-Archive-Days: {' '.join(days)}\n")


def rotation_message(rotation: Rotation) -> str:
    refs = " ".join(sorted(rotation.moves))
    return (f"rotate: {rotation.summary()} into archive refs (still in history)\n\n"
            f"Puppemon-Rotated-To: {refs}\n")
