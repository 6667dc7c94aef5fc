"""Store lookups that keep nothing (pygit2 1.21 keeps every path string it is given; see gitstore/memory.py),
checked against `git ls-tree` on names that sort around the "/" git puts after a tree's name."""
from __future__ import annotations

import sys

from puppemon.gitstore import FILE, TREE, Store
from tests.conftest import git

NAMES = ["a", "a b", "a-b", "a.b", "a0", "a_b", "b", "ab", "a!", "é"]


def test_lookup_finds_what_git_ls_tree_finds_and_keeps_no_path(bare_remote):
    store = Store(bare_remote)
    blob = store.blob(b"x")
    # each name as a file at the top and as a directory below "d/", so files and trees sort side by side
    tree = store.update_tree(None, {**{n: (blob, FILE) for n in NAMES}, **{f"d/{n}/f": (blob, FILE) for n in NAMES},
                                    **{f"d/{n}.txt": (blob, FILE) for n in NAMES}})
    listed = git("--git-dir", str(bare_remote), "ls-tree", "-r", "-t", "-z", "--full-tree", tree).split("\0")
    expected = {line.split("\t", 1)[1]: line.split()[2] for line in listed if line}
    for path, oid in expected.items():
        found = store.lookup(tree, path)
        assert found is not None and found.oid == oid, path
    for path in ["nope", "a/x", "d/a/f/x", "d/a b/g", "d/é.txt/x", "d/z", "c"]:
        assert store.lookup(tree, path) is None, path
    assert store.lookup(tree, "d/a").mode == TREE
    missing = "requests/2026/11/25/" + "x" * 30
    present = "d/" + "a" + "-b.txt"   # built at run time: not a constant the interpreter keeps anyway
    before = sys.getrefcount(missing), sys.getrefcount(present)
    for _ in range(50):
        store.lookup(tree, missing)
        store.lookup(tree, present)
        store.update_tree(tree, {missing: None, present: (blob, FILE)})
        store.ref(missing.replace("requests", "refs/heads"))
    assert (sys.getrefcount(missing), sys.getrefcount(present)) == before
