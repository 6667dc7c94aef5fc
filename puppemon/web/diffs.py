"""Diffs of text blobs, bounded: a run's outputs against the previous run's, a deploy's files against
the previous deploy's."""
from __future__ import annotations

import difflib

PREVIEW = 4096
DIFF_MAX = 256 * 1024
DIFF_LINES = 400


def text(data: bytes) -> str | None:
    """`data` as text, or None when it is binary (a NUL near its start) or not UTF-8."""
    if b"\0" in data[:PREVIEW]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


DEPLOY_DIFFS = 20      # files of a deploy shown as a diff


def deploy_diffs(store, parent_tree: str | None, changes: list) -> list[dict]:
    """The changed files of a deploy (gitstore Changes), the first DEPLOY_DIFFS of them with the diff of
    their text against the previous deploy's."""
    shown = []
    for n, change in enumerate(changes):
        item = {"status": change.status, "path": change.path, "size": change.size, "diff": None}
        if n < DEPLOY_DIFFS and change.size <= DIFF_MAX:
            old = store.lookup(parent_tree, change.path) if parent_tree and change.status != "added" else None
            before = text(store.data(old.oid)) if old is not None and not old.is_tree and old.oid != change.oid \
                else "" if change.status == "added" else None
            after = "" if change.status == "removed" else text(store.data(change.oid))
            if before is not None and after is not None:
                lines = difflib.unified_diff(before.splitlines(keepends=True), after.splitlines(keepends=True),
                                             f"a/{change.path}", f"b/{change.path}")
                item["diff"] = "".join(list(lines)[:DIFF_LINES])
        shown.append(item)
    return shown
