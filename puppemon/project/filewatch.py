"""`on_file:`: a flow runs when files matching a pattern land in (or change in) a directory of the server.

    on_file: {path: /srv/inbox, pattern: "*.csv", settle: 2s, batch: false, poll: false}

`path` (an absolute directory on the server) and `pattern` (a glob matched against the
names of the files directly in it) are required. A file fires once its size and
modification time have stayed unchanged for `settle`; each file is one run, or with
`batch: true` the files that settled together are one run. `poll: true` checks the
directory by polling instead of inotify (NFS and SMB mounts deliver no inotify events).

Only the manifest form lives here; the daemon's side (which directories a server lets
flows watch, the observers, each file once) is puppemon/daemon/watch.py.
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from puppemon.formats import format_interval, show
from puppemon.project.events import NoClock
from puppemon.project.schema import Checker, Invalid, boolean, duration, record, string

SETTLE = 2.0   # seconds a file must stay unchanged before it fires, unless the flow says otherwise


def _directory(node, path: str) -> str:
    value = string(node, path)
    if not value.startswith("/"):
        raise Invalid(node, path, f"{show(value)} is not an absolute path (give the server directory to watch, "
                      "e.g. /srv/inbox)")
    return posixpath.normpath(value)


def glob_problem(pattern: str) -> str | None:
    """Why `pattern` is not a glob for file names (None when it is one)."""
    if not pattern:
        return "the pattern is empty (use a glob such as \"*.csv\")"
    if "/" in pattern:
        return "a pattern matches file names, not paths: it cannot hold '/' (put the directory in path:)"
    if "\0" in pattern:
        return "a pattern cannot hold a NUL character"
    i = 0
    while i < len(pattern):
        if pattern[i] == "[":
            j = i + 1
            if j < len(pattern) and pattern[j] == "!":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1   # `[]]` and `[!]]`: a ']' first in the set is one of its characters
            close = pattern.find("]", j)
            if close < 0:
                return f"'[' at position {i + 1} is not closed by ']' (write [[] for a literal '[')"
            i = close
        i += 1
    return None


def _pattern(node, path: str) -> str:
    value = string(node, path)
    problem = glob_problem(value)
    if problem:
        raise Invalid(node, path, f"{show(value)} is not a glob: {problem}")
    return value


_FIELDS: dict[str, Checker] = {
    "path": _directory,
    "pattern": _pattern,
    "settle": duration(positive=True),
    "batch": boolean,
    "poll": boolean,
}


def _check(node, path: str) -> dict[str, Any]:
    values = record(node, path, _FIELDS)
    if "path" not in values:
        raise Invalid(node, path, "path is missing (name the server directory to watch, e.g. path: /srv/inbox)")
    if "pattern" not in values:
        raise Invalid(node, path, "pattern is missing (the file names to run for, e.g. pattern: \"*.csv\")")
    return values


@dataclass(frozen=True)
class OnFile(NoClock):
    """`on_file: {path, pattern, settle, batch, poll}`: runs for files landing in a server directory."""

    kind: ClassVar[str] = "file"
    key: ClassVar[str] = "on_file"
    check = staticmethod(_check)
    path: str
    pattern: str
    settle: float = SETTLE
    batch: bool = False
    poll: bool = False

    @classmethod
    def build(cls, value: dict[str, Any], timezone: str) -> OnFile:
        return cls(**value)

    def describe(self) -> str:
        extra = "".join(f", {word}" for word, on in (("batch", self.batch), ("poll", self.poll)) if on)
        return f"on file {posixpath.join(self.path, self.pattern)} (settle {format_interval(self.settle)}{extra})"

    def preview(self, now: datetime) -> datetime | str:
        return "next file"
