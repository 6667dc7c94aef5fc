"""Purge: rewrite the runs history and the archive refs without some records, and force-push them with a lease.

The one place puppemon rewrites history (retention only takes records out of the
tip). Every commit of `runs` and of each `refs/puppemon/archive/*` ref is
replayed without the purged paths; a commit left with no change is dropped, and
a kept commit whose message names a purged run loses those lines. The push is
atomic and leased on the tips that were read, so a record pushed meanwhile is
never overwritten: the lease fails and nothing changes, here or there.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from datetime import date

from puppemon.errors import PuppemonError
from puppemon.formats import ARCHIVE_PREFIX, plural
from puppemon.gitstore import PushRejected, Store
from puppemon.gitstore.rewrite import RefRewrite, Rewriter
from puppemon.history import layout
from puppemon.history.recorder import Recorder

SCRATCH = "refs/puppemon/purging/"
# where the yyyy/mm/dd of each kind of dated record starts: runs/<flow>/yyyy, requests/yyyy, ...
DATED = {"runs": 2, "requests": 1, "deploys": 1, "claims": 1}
ID_IN_TEXT = re.compile(r"([0-9]{4})([0-9]{2})([0-9]{2})T[0-9]{6}Z-[0-9a-f]{1,32}")
SCRUBBED = "records (some purged)"


def _day(parts: list[str]) -> date | None:
    if not all(p.isdigit() for p in parts):
        return None
    try:
        return date(*(int(p) for p in parts))
    except ValueError:
        return None  # not a date: not ours, left alone


@dataclass(frozen=True)
class Selection:
    """Which records a purge takes out: every dated directory before `before`, and the runs `run_ids`."""

    before: date | None = None
    run_ids: frozenset[str] = frozenset()
    _dirs: dict = field(default_factory=dict, compare=False, repr=False)  # directory -> taken (memo)

    def takes(self, path: str) -> bool:
        """Whether the file at `path` (on runs or an archive ref) is purged."""
        parent, _, name = path.rpartition("/")
        if parent not in self._dirs:
            self._dirs[parent] = self._takes_dir(parent.split("/"))
        if self._dirs[parent]:
            return True
        return (parent.startswith("requests/") and parent.count("/") == 3 and name.endswith(".json")
                and name.split(".", 1)[0] in self.run_ids)  # <id>.json, <id>.claim.json, ...

    def _takes_dir(self, parts: list[str]) -> bool:
        start = DATED.get(parts[0])
        if start is None or len(parts) < start + 3:
            return False
        day = _day(parts[start:start + 3])
        if day is None:
            return False
        if self.before is not None and day < self.before:
            return True
        return parts[0] == "runs" and len(parts) > start + 3 and parts[start + 3] in self.run_ids

    def names(self, text: str) -> bool:
        """Whether `text` names a purged run."""
        for match in ID_IN_TEXT.finditer(text):
            if match.group(0) in self.run_ids:
                return True
            if self.before is not None and (day := _day(list(match.groups()))) and day < self.before:
                return True
        return False

    def scrub(self, message: str) -> str:
        """`message` without the lines that name a purged run (and then without its subject, which was theirs)."""
        lines = message.split("\n")
        if not any(self.names(line) for line in lines):
            return message
        return "\n".join([SCRUBBED] + [line for line in lines[1:] if not self.names(line)])


@dataclass
class Plan:
    """A purge worked out and not yet written: the refs it rewrites and what it takes out."""

    store: Store
    remote: str | None
    selection: Selection
    rewriter: Rewriter
    refs: list[RefRewrite]            # the remote's (or, without a remote, this repository's) refs
    local: RefRewrite | None          # the local runs branch, when it holds records the remote has not got
    tracking: str | None

    @property
    def changed(self) -> list[RefRewrite]:
        return [rw for rw in self.refs if rw.changed]

    def counts(self) -> tuple[int, int]:
        """(run records, request/deploy/claim files) taken out."""
        runs = {"/".join(p.split("/")[:6]) for p in self.rewriter.removed if p.startswith("runs/")}
        return len(runs), sum(1 for p in self.rewriter.removed if not p.startswith("runs/"))

    def what(self) -> str:
        runs, other = self.counts()
        text = plural(runs, "run")
        return text + (f" and {plural(other, 'request/deploy/claim file')}" if other else "")

    def where(self) -> str:
        refs = [f"{rw.ref} ({plural(rw.commits, 'commit')}: {rw.dropped} dropped, {rw.rewritten} rewritten)"
                for rw in self.changed]
        text = ", ".join(refs[:-1]) + (" and " if len(refs) > 1 else "") + refs[-1]
        return f"{text} on {self.remote}" if self.remote else f"{text} in this repository"

    def missing(self) -> list[str]:
        """The run ids asked for that no commit holds."""
        found = set()
        for path in self.rewriter.removed:
            parts = path.split("/")
            found.add(parts[5] if parts[0] == "runs" and len(parts) > 6 else parts[-1].split(".", 1)[0])
        return sorted(self.selection.run_ids - found)


def plan(store: Store, remote: str | None, selection: Selection, branch: str = "runs") -> Plan:
    """Fetch the remote's runs and archive refs (local records replayed on top, as any reader does) and
    work out the purge. Nothing is written but the fetched refs."""
    recorder = Recorder(store, remote=remote, branch=branch)
    ref = recorder.ref
    if remote is not None:
        recorder.sync(push=False, patience=0)
        layout.check(store, store.ref(recorder.tracking), f"runs on {remote}")  # a rewrite is a write too
        tips = {ref: store.ref(recorder.tracking), **_fetch_archives(store, remote)}
    else:
        tips = {ref: store.ref(ref), **store.refs(ARCHIVE_PREFIX)}
    rewriter = Rewriter(store, selection.takes, selection.scrub)
    refs = [rewriter.plan(name, tip) for name, tip in sorted(tips.items(), key=lambda kv: kv[0] != ref) if tip]
    local_tip = store.ref(ref)
    local = rewriter.plan(ref, local_tip) if remote is not None and local_tip and local_tip != tips[ref] else None
    return Plan(store, remote, selection, rewriter, refs, local, recorder.tracking if remote else None)


def _fetch_archives(store: Store, remote: str) -> dict[str, str]:
    """The remote's archive refs and their tips (their objects fetched here; no ref of ours kept)."""
    scratch = f"{SCRATCH}{os.getpid()}/"
    try:
        store.fetch(remote, [f"+{ARCHIVE_PREFIX}*:{scratch}*"])
        return {ARCHIVE_PREFIX + name[len(scratch):]: sha for name, sha in store.refs(scratch).items()}
    finally:
        for name in store.refs(scratch):
            store.delete_ref(name)


def apply(plan: Plan) -> None:
    """Write the rewritten histories, force-push them (atomic, leased on what was read), then move the
    local refs. PuppemonError when the remote moved meanwhile: then nothing changed anywhere."""
    store = plan.store
    plan.rewriter.write(plan.refs + ([plan.local] if plan.local else []))
    for rw in plan.refs:
        if rw.new is None:
            # Kept, empty, rather than deleted: a fetch elsewhere (+refs/puppemon/archive/*) updates
            # a ref but never deletes one, and an old ref left there would hold what was purged.
            empty = store.update_tree(None, {})
            rw.new = store.commit(empty, [], "purge: every record this ref held was purged\n",
                                  store.default_signature())
    changed = plan.changed
    if plan.remote is not None:
        leases = [f"--force-with-lease={rw.ref}:{rw.old}" for rw in changed]
        specs = [f"{rw.new}:{rw.ref}" for rw in changed]
        try:
            # leases first: git reads options after the remote too, and push() takes them as its refspecs
            store.push(store.remote_url(plan.remote, push=True), leases + specs, atomic=True)
        except PushRejected:
            raise PuppemonError(f"{plan.remote} changed while purging (a record was pushed meanwhile): nothing "
                                f"was rewritten, there or here; run the purge again") from None
    _move_local(plan)


def _move_local(plan: Plan) -> None:
    store = plan.store
    runs = plan.refs[0] if plan.refs and not plan.refs[0].ref.startswith(ARCHIVE_PREFIX) else None
    for rw in plan.changed:
        if plan.remote is None or rw.ref.startswith(ARCHIVE_PREFIX) and store.ref(rw.ref) == rw.old:
            _point(store, rw.ref, rw.new)
    if plan.remote is None or runs is None:
        return
    _point(store, plan.tracking, runs.new)
    local = plan.local or runs
    if store.ref(runs.ref) == local.old and local.new != local.old:
        _point(store, runs.ref, local.new)


def _point(store: Store, ref: str, sha: str | None) -> None:
    if sha is None:
        store.delete_ref(ref)
    else:
        store.force_ref(ref, sha)
