"""A run's files: its working copy of the code, and the outputs it leaves (capped, redacted, never followed)."""
from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import stat
import tempfile
from pathlib import Path

from puppemon.formats import format_size, plural
from puppemon.run.spec import Output
from puppemon.secrets import needles, redact

MAX_DEPTH = 100      # directories below the output dir; deeper ones are skipped (one fd is open per level)
SHOWN = 10           # names listed in a note, per kind
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO swapped in after the scan must not block the open.
_FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# Names git refuses in a tree or `git fsck --strict` rejects (.git in any case, with HFS-ignored
# characters or NTFS trailing dots and spaces, 8.3 short names), and the .git* files fsck parses.
_GIT_SPECIAL = re.compile(r"(\.git(modules|attributes)?|(git|gi[a-z0-9]{4})~[0-9]+)(:.*)?")


def new_area(run_id: str, root: Path | None = None) -> Path:
    """A run's work area (in `root`, else the temp directory): its copy of the code, TMPDIR, outputs, result."""
    return Path(tempfile.mkdtemp(prefix=f"puppemon-{run_id}-", dir=root))


def remove_areas(run_id: str) -> int:
    """Remove the work areas `new_area` made for `run_id` that a crash left behind; how many there were."""
    from puppemon.formats import RUN_ID

    if not RUN_ID.match(run_id):  # from the daemon's own journal, but never a glob pattern
        return 0
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"puppemon-{run_id}-*"):
        if path.is_dir() and not path.is_symlink():
            rmtree(path)
            removed += 1
    return removed


def rmtree(path: Path) -> None:
    """Remove a tree the flow may have made read-only in places; a symlink in its place is only unlinked.

    Nothing is followed: fwalk does not descend into a symlink, and chmod without
    following refuses one, so the directories a link points to keep their modes.
    """
    if os.path.islink(path) or not os.path.isdir(path):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        return
    for _, dirs, _, fd in os.fwalk(path, follow_symlinks=False):
        for d in dirs:
            try:
                os.chmod(d, 0o700, dir_fd=fd, follow_symlinks=False)
            except (OSError, ValueError):  # ValueError: `d` is a symlink (to a directory)
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


def read_left(path: Path, limit: int) -> bytes | None:
    """A file the flow left in its area (result.json, its error text): None when there is none, and
    never through a symlink nor from anything but a regular file (a flow run as another user owns
    the area; the daemon reading as root must not fetch /etc/shadow for it). At most `limit` bytes."""
    try:
        fd = os.open(path, _FILE)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OSError(f"{path.name} is a symlink (not followed)") from None
        raise
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise OSError(f"{path.name} is larger than {format_size(limit)}")
    return data


def empty_dir(path: Path) -> None:
    rmtree(path)
    path.mkdir()


def collect_outputs(root: Path, limit: int, secrets: dict | None = None) -> tuple[list[Output], str | None]:
    """The regular files below `root`, up to `limit` bytes in all, redacted, and a note on what was left out.

    Nothing is followed: every directory is opened relative to its parent's descriptor with
    O_NOFOLLOW, so a symlink swapped in for `root` or for a directory being walked is never
    read through. The note never holds a secret value (it is redacted as the log is).
    """
    secrets = secrets or {}
    collector = _Collector(limit, secrets)
    try:
        parent = os.open(root.parent, _DIR)  # the run's area: a flow run as another user owns it
    except OSError as exc:
        return [], redact(_gone(None, str(root.parent), exc, "the output directory's parent"), secrets)
    try:
        try:
            fd = os.open(root.name, _DIR, dir_fd=parent)
        except OSError as exc:
            return [], redact(_gone(parent, root.name, exc, "the output directory"), secrets)
        collector.walk(fd, "", 0)
    finally:
        os.close(parent)
    return collector.outputs, collector.note()


def _gone(parent: int | None, name: str, exc: OSError, what: str) -> str:
    """Why nothing was recorded: `what` (`name` in `parent`) could not be opened as a directory."""
    try:
        target = os.readlink(name, dir_fd=parent)
    except OSError:
        how = "removed" if exc.errno == errno.ENOENT else f"unreadable ({exc.strerror})"
        return f"{what} was {how}: nothing in it was recorded"
    return f"{what} was replaced by a symlink to {_shown(target)}: nothing in it was recorded"


def _shown(name: str) -> str:
    """A name as a note can hold it: bytes that are not UTF-8 as \\xNN."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _listed(names: list[str]) -> str:
    more = f" and {len(names) - SHOWN} more" if len(names) > SHOWN else ""
    return ", ".join(names[:SHOWN]) + more


def _is_text(data: bytes) -> bool:
    """Text is valid UTF-8 without NUL bytes: what the log's byte-wise redaction handles exactly.
    Anything else (an image, a zip, UTF-16) may hold a value in a form no pattern matches."""
    if b"\0" in data:
        return False
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _Collector:
    """One walk of an output dir, in path order: what is recorded, and what is left out and why."""

    def __init__(self, limit: int, secrets: dict) -> None:
        self.limit, self.secrets = limit, secrets
        self.texts = needles(secrets)
        self.needles = [n.encode() for n in self.texts]
        self.outputs: list[Output] = []
        self.total = 0
        self.over: list[tuple[str, int]] = []   # left out for the cap: (path, size)
        self.skipped: list[str] = []            # "path (why)"

    def walk(self, fd: int, prefix: str, depth: int) -> None:
        """Record what is below the directory open as `fd` (closed here)."""
        try:
            with os.scandir(fd) as it:
                # A directory sorts as "name/", so the walk goes in the order of the whole paths
                # (the order the cap is applied in, whatever the nesting).
                entries = sorted(it, key=lambda e: e.name + ("/" if e.is_dir(follow_symlinks=False) else ""))
            for entry in entries:
                self.entry(fd, entry, prefix + entry.name, depth)
        finally:
            os.close(fd)

    def entry(self, fd: int, entry: os.DirEntry, rel: str, depth: int) -> None:
        name = entry.name
        if any(n in rel for n in self.texts):
            return self.skip(rel, "a secret value in its name")
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            return self.skip(rel, "a name that is not UTF-8")
        if _GIT_SPECIAL.fullmatch("".join(c for c in name if c.isascii()).lower().rstrip(". ")):
            return self.skip(rel, "a name git does not record")
        if entry.is_symlink():
            return self.skip(rel, self.why(fd, name))
        if entry.is_file(follow_symlinks=False):
            return self.file(fd, name, rel)
        if not entry.is_dir(follow_symlinks=False):
            return self.skip(rel, "not a regular file")
        if depth >= MAX_DEPTH:
            return self.skip(rel, f"more than {MAX_DEPTH} directories deep")
        try:
            sub = os.open(name, _DIR, dir_fd=fd)
        except OSError as exc:  # swapped for a symlink since the scan, closed to us, ...
            return self.skip(rel, self.why(fd, name, exc))
        self.walk(sub, rel + "/", depth + 1)

    def why(self, fd: int, name: str, exc: OSError | None = None) -> str:
        """Why `name` is not read: the symlink it is (now), or the error opening it."""
        try:
            return f"symlink to {_shown(os.readlink(name, dir_fd=fd))}"
        except OSError as not_a_link:
            return f"unreadable ({(exc or not_a_link).strerror})"

    def file(self, fd: int, name: str, rel: str) -> None:
        room = self.limit - self.total
        try:
            handle = os.fdopen(os.open(name, _FILE, dir_fd=fd), "rb")
        except OSError as exc:
            return self.skip(rel, self.why(fd, name, exc))
        with handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                return self.skip(rel, "not a regular file")
            if st.st_size > room:
                return self.over.append((rel, st.st_size))
            data = handle.read(room + 1)
        if len(data) > room:  # grew after the scan
            return self.over.append((rel, max(st.st_size, len(data))))
        data = self.redacted(data)
        if data is None:
            return self.skip(rel, "binary, with a secret value in it: only text files are redacted")
        if len(data) > room:  # a short secret's *** made it longer
            return self.over.append((rel, len(data)))
        self.total += len(data)
        self.outputs.append(Output(rel, len(data), hashlib.sha256(data).hexdigest(), data,
                                   bool(st.st_mode & stat.S_IXUSR)))

    def redacted(self, data: bytes) -> bytes | None:
        """The file as it is recorded: text redacted like the log; None for binary holding a secret."""
        if not self.needles:
            return data
        if _is_text(data):
            return redact(data, self.secrets)
        return None if any(n in data for n in self.needles) else data

    def skip(self, rel: str, why: str) -> None:
        self.skipped.append(f"{_shown(rel)} ({why})")

    def note(self) -> str | None:
        notes = []
        if self.over:
            size = sum(size for _, size in self.over)
            notes.append(f"{plural(len(self.over), 'file')} ({format_size(size)}) not recorded: outputs are "
                         f"capped at {format_size(self.limit)} per run ({_listed([_shown(p) for p, _ in self.over])})")
        if self.skipped:
            notes.append("skipped " + _listed(self.skipped))
        return redact("; ".join(notes), self.secrets) or None
