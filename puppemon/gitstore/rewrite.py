"""Rewriting linear histories without some paths: planned in memory, written as one pack by git fast-import.

Each commit is replayed as its own changes: its tree diffed against its parent's,
minus the paths taken out, applied on top of the rewritten parent. Git's tree diff
skips every subtree whose oid did not change (the memo is the object id itself),
so a commit costs what it changed, not the size of its tree, and the whole rewrite
is roughly proportional to the number of commits. Planning writes nothing; only
`write()` does, and then one pack rather than a loose object per tree and commit.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

import pygit2

from puppemon.gitstore.command import GitError
from puppemon.gitstore.store import TREE, Store

Kept = str          # a commit that stays as it is (its sha)
Mark = int          # a commit fast-import will write (its mark)


@dataclass
class RefRewrite:
    """What rewriting one ref does: its old tip, counts, and (after `write`) its new tip."""

    ref: str
    old: str
    commits: int = 0          # commits on its first-parent history
    rewritten: int = 0        # written anew (their own changes, their message or their parent changed)
    dropped: int = 0          # left out: every change they made was taken out
    scrubbed: int = 0         # kept with a message that no longer names what was taken out
    tip: Kept | Mark | None = None
    new: str | None = None    # after write(); None when nothing at all is left

    @property
    def changed(self) -> bool:
        return self.tip != self.old


@dataclass
class Rewriter:
    """Rewrites first-parent histories of `store` without the paths `taken(path)` names.

    `message(text)` gives the message a kept commit gets (the same text to keep it)."""

    store: Store
    taken: Callable[[str], bool]
    message: Callable[[str], str]
    removed: set[str] = field(default_factory=set)   # every path taken out, as any commit wrote it
    _map: dict[str, Kept | Mark | None] = field(default_factory=dict)
    _count: dict[str, int] = field(default_factory=dict)   # commits up to each planned one
    _stream: list[bytes] = field(default_factory=list)
    _marks: int = 0
    _trees: dict = field(default_factory=dict)    # tree oid -> its entries, for the next commit's diff

    def plan(self, ref: str, tip: str) -> RefRewrite:
        """Plan the rewrite of the history ending at `tip` (commits already planned are reused)."""
        repo = self.store.repo
        chain, sha = [], tip
        while sha and sha not in self._map:
            commit = repo[sha]
            if len(commit.parent_ids) > 1:
                raise GitError(f"{ref} has a merge commit ({sha[:12]}); only a linear history can be rewritten")
            chain.append(commit)
            sha = str(commit.parent_ids[0]) if commit.parent_ids else None
        result = RefRewrite(ref, tip)
        scratch = f"refs/puppemon/rewriting/{len(self._stream)}"
        for commit in reversed(chain):
            self._plan_commit(commit, scratch, result)
        result.tip, result.commits = self._map[tip], self._count[tip]
        return result

    def _plan_commit(self, commit: pygit2.Commit, scratch: str, result: RefRewrite) -> None:
        parent = str(commit.parent_ids[0]) if commit.parent_ids else None
        new_parent = self._map[parent] if parent else None
        changes, kept = self._changes(commit, parent)
        sha = str(commit.id)
        self._count[sha] = (self._count[parent] if parent else 0) + 1
        if changes and not kept:
            self._map[sha] = new_parent
            result.dropped += 1
            return
        text = commit.raw_message.decode("utf-8", "surrogateescape")
        new_text = self.message(text)
        if new_parent == parent and len(kept) == len(changes) and new_text == text:
            self._map[sha] = sha
            return
        self._marks += 1
        self._map[sha] = self._marks
        result.rewritten += 1
        result.scrubbed += new_text != text
        raw = commit.raw_message if new_text == text else new_text.encode("utf-8", "surrogateescape")
        self._stream.append(_commit_command(scratch, self._marks, commit, raw, new_parent, kept))

    def _changes(self, commit: pygit2.Commit, parent: str | None) -> tuple[list, list]:
        """(every change the commit made, the ones kept) as (raw path, (mode, blob) or None when removed)."""
        changes: list = []
        self._diff(self.store.repo[parent].tree_id if parent else None, commit.tree_id, b"", changes)
        kept = []
        for path, value in changes:
            text = path.decode("utf-8", "surrogateescape")
            if not self.taken(text):
                kept.append((path, value))
            elif value is not None:
                self.removed.add(text)
        return changes, kept

    def _entries(self, oid) -> dict[bytes, tuple[int, pygit2.Oid]]:
        entries = self._trees.get(oid)
        if entries is None:
            if len(self._trees) > 4096:  # a commit reads what its parent read: a short memory is enough
                self._trees.clear()
            entries = self._trees[oid] = {e.raw_name: (e.filemode, e.id) for e in self.store.repo[oid]}
        return entries

    def _diff(self, old, new, prefix: bytes, out: list) -> None:
        """The files that differ between two trees, skipping every subtree whose oid is the same on both
        sides: a commit costs what it changed (libgit2's tree diff took ~2 ms a commit on a runs branch,
        minutes for a long history)."""
        before = self._entries(old) if old is not None else {}
        after = self._entries(new) if new is not None else {}
        for name in sorted(before.keys() | after.keys()):
            was, now = before.get(name), after.get(name)
            if was == now:
                continue
            path = prefix + name
            if was is not None and now is not None and was[0] == TREE and now[0] == TREE:
                self._diff(was[1], now[1], path + b"/", out)
                continue
            if was is not None and (now is None or TREE in (was[0], now[0])):  # gone, or a file became a tree
                self._side(was, path, out, gone=True)
            if now is not None:
                self._side(now, path, out, gone=False)

    def _side(self, entry: tuple[int, pygit2.Oid], path: bytes, out: list, gone: bool) -> None:
        mode, oid = entry
        if mode == TREE:
            self._diff(oid if gone else None, None if gone else oid, path + b"/", out)
        else:
            out.append((path, None if gone else (mode, str(oid))))

    def write(self, rewrites: list[RefRewrite]) -> None:
        """Write every planned commit (one pack, through git fast-import) and fill in each `new`."""
        marks: dict[int, str] = {}
        if self._stream:
            marks = self._fast_import()
        for rw in rewrites:
            rw.new = marks[rw.tip] if isinstance(rw.tip, int) else rw.tip

    def _fast_import(self) -> dict[int, str]:
        store = self.store
        fd, marks_path = tempfile.mkstemp(prefix="puppemon-marks-", dir=store.git_dir)
        os.close(fd)
        try:
            proc = store.git("fast-import", "--quiet", "--force", "--done", "--date-format=raw",
                             f"--export-marks={marks_path}", input=b"".join(self._stream) + b"done\n",
                             check=False)
            if proc.returncode != 0:
                raise GitError(f"git fast-import failed: {proc.stderr.decode('utf-8', 'replace').strip()}")
            with open(marks_path) as fh:
                marks = {int(mark[1:]): sha for mark, sha in (line.split() for line in fh if line.strip())}
        finally:
            os.unlink(marks_path)
            for name in store.refs("refs/puppemon/rewriting/"):
                store.delete_ref(name)
        return marks


def _ident(kind: bytes, sig: pygit2.Signature) -> bytes:
    offset = sig.offset
    tz = b"%c%02d%02d" % (b"-" if offset < 0 else b"+", abs(offset) // 60, abs(offset) % 60)
    name = sig.raw_name + b" " if sig.raw_name else b""
    return kind + b" " + name + b"<" + sig.raw_email + b"> %d " % sig.time + tz + b"\n"


def _quote(path: bytes) -> bytes:
    """A path as fast-import reads it: C-style quoted, so any byte (a space, a quote, a newline) is safe."""
    out = bytearray(b'"')
    for byte in path:
        if byte in (0x22, 0x5C):
            out += b"\\" + bytes([byte])
        elif byte < 0x20 or byte >= 0x7F:
            out += b"\\%03o" % byte
        else:
            out.append(byte)
    return bytes(out + b'"')


def _commit_command(scratch: str, mark: int, commit: pygit2.Commit, message: bytes,
                    parent: Kept | Mark | None, changes: list) -> bytes:
    parts = [b"reset " + scratch.encode() + b"\n"] if parent is None else []
    parts += [b"commit " + scratch.encode() + b"\n", b"mark :%d\n" % mark,
              _ident(b"author", commit.author), _ident(b"committer", commit.committer),
              b"data %d\n" % len(message), message, b"\n"]
    if parent is not None:
        parts.append(b"from " + (b":%d" % parent if isinstance(parent, int) else parent.encode()) + b"\n")
    for path, value in changes:
        if value is None:
            parts.append(b"D " + _quote(path) + b"\n")
        else:
            parts.append(b"M %o %s " % (value[0], value[1].encode()) + _quote(path) + b"\n")
    return b"".join(parts) + b"\n"
