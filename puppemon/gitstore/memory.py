"""What pygit2 and libgit2 keep in memory, and how puppemon keeps it bounded.

libgit2 keeps each object it has parsed in a cache of up to 256 MB by default; a
daemon parses a new commit and a few new trees for every run, so its memory grew by
several KB a run for as long as it ran. CACHE_BYTES bounds that cache (the objects
looked up again and again, the tips and the upper trees, stay in it).

pygit2 1.21 keeps a reference to every path or ref name given to `tree[path]`,
`path in tree`, `TreeBuilder.get`/`remove` and `references.get` (its C helper
`pgit_borrow_fsdefault` never releases what `PyOS_FSPath` returns), so each string
passed there lives as long as the process. A daemon that looks up new paths (a run
id, a date directory) every cycle for months would keep every one of them. A tree
entry found by its index is not affected, nor is a string that is always the same
object, so tree entries are found by bisecting on indices and ref names are given
to pygit2 as one object per name.
"""
from __future__ import annotations

import os
import threading

import pygit2

TREE = 0o040000
CACHE_BYTES = 512 * 1024  # as libgit2 counts it: what it holds in memory is about four times that
_MAX_NAMES = 4096
_names: dict[str, str] = {}
_lock = threading.Lock()

pygit2.settings.cache_max_size(CACHE_BYTES)


def child(tree: pygit2.Tree, name: str) -> pygit2.Object | None:
    """The entry `name` (one level, no slash) of `tree`, or None."""
    key = os.fsencode(name)
    lo, hi = 0, len(tree)
    while lo < hi:  # git orders entries by name, a tree's as if its name ended in "/"
        mid = (lo + hi) // 2
        found = tree[mid]
        if _key(found) < key:
            lo = mid + 1
        else:
            hi = mid
    # Between "name" (a file) and "name/" (a tree) sort only names that go on with a byte below "/".
    while lo < len(tree):
        found = tree[lo]
        if found.raw_name == key:
            return found
        if _key(found) > key + b"/":
            return None
        lo += 1
    return None


def _key(obj: pygit2.Object) -> bytes:
    return obj.raw_name + b"/" if obj.filemode == TREE else obj.raw_name


def ref_name(name: str) -> str:
    """The one object pygit2 is given for the ref name `name` (a few names, looked up again and again)."""
    with _lock:
        found = _names.get(name)
        if found is None:
            if len(_names) >= _MAX_NAMES:  # not a daemon's few refs: stop keeping them
                return name
            found = _names[name] = name
        return found
