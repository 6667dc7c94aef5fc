"""What git objects are, for every part of gitstore: file modes, tree entries, changes, commits.

Plain data, no pygit2, so code that only runs git (`puppemon push`) can use them.
"""
from __future__ import annotations

from dataclasses import dataclass

FILE, EXEC, LINK, TREE, GITLINK = 0o100644, 0o100755, 0o120000, 0o040000, 0o160000
EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"


class TooLarge(ValueError):
    """A blob over the size its reader allows (Store.read with a limit); `size` is its size in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"{size} bytes")
        self.size = size


@dataclass(frozen=True)
class Entry:
    name: str
    mode: int
    oid: str

    @property
    def is_tree(self) -> bool:
        return self.mode == TREE


@dataclass(frozen=True)
class Change:
    """One path that differs between two trees."""

    status: str      # added | changed | removed
    path: str
    mode: int        # the new mode (the old one when removed)
    oid: str         # the new blob (the old one when removed)
    size: int


@dataclass(frozen=True)
class Commit:
    sha: str
    tree: str
    parents: tuple[str, ...]
    message: str
    time: int  # committer time, seconds since the epoch
