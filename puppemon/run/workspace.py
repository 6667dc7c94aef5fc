"""A run's files: its working copy of the code, and the outputs it leaves (capped, never followed)."""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from puppemon.formats import format_size, plural
from puppemon.run.spec import Output


def rmtree(path: Path) -> None:
    """Remove a tree the flow may have made read-only in places."""
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


def copy_code(code_dir: Path, dest: Path) -> None:
    """A writable copy of the (read-only) deploy checkout: the run's own working directory."""
    shutil.copytree(code_dir, dest, symlinks=True)
    for directory, dirs, files in os.walk(dest):
        for name in [*dirs, *files, None]:
            path = os.path.join(directory, name) if name else directory
            if not os.path.islink(path):
                mode = os.lstat(path).st_mode
                if not mode & stat.S_IWUSR:
                    os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR)


def empty_dir(path: Path) -> None:
    rmtree(path)
    path.mkdir()


def collect_outputs(root: Path, limit: int) -> tuple[list[Output], str | None]:
    """The regular files below `root`, up to `limit` bytes in all, and a note on what was left out."""
    found: list[tuple[str, int, bool]] = []
    skipped: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = prefix + entry.name
            if entry.is_symlink():
                skipped.append(f"{rel} (symlink to {os.readlink(entry.path)})")
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), rel + "/")
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append((rel, st.st_size, bool(st.st_mode & stat.S_IXUSR)))
            else:
                skipped.append(f"{rel} (not a regular file)")

    walk(root, "")
    found.sort()
    outputs: list[Output] = []
    total = 0
    left_out = left_bytes = 0
    for rel, size, executable in found:
        if left_out or total + size > limit:
            left_out += 1
            left_bytes += size
            continue
        fd = os.open(root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit - total + 1)
        if len(data) > limit - total:  # grew after the stat
            left_out += 1
            left_bytes += len(data)
            continue
        total += len(data)
        outputs.append(Output(rel, len(data), hashlib.sha256(data).hexdigest(), data, executable))
    notes = []
    if left_out:
        notes.append(f"{plural(left_out, 'file')} ({format_size(left_bytes)}) not recorded: "
                     f"outputs are capped at {format_size(limit)} per run")
    if skipped:
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        notes.append("skipped " + ", ".join(skipped[:10]) + more)
    return outputs, "; ".join(notes) or None
