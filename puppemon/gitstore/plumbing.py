"""A working tree through git processes alone, without pygit2: what `puppemon push` needs.

A push is a handful of git processes whatever the project's size (rev-parse, config,
add, write-tree, fetch, ls-tree, diff-tree, cat-file, commit-tree, push); loading
pygit2 to do the small part of that work in-process would cost more than all of
those small processes together. Callers start the slow ones (fetch, add) with
`Background` and wait for them where they need the answer.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from puppemon.gitstore.command import Background, GitError, git_env, git_message, run_git
from puppemon.gitstore.objects import GITLINK, Change, Entry

_SEARCHED = "^(remote|branch|user|url)\\."    # the config a push reads: remotes, upstreams, identity, rewrites


@dataclass
class Checkout:
    """A repository's working tree as git sees it from one directory inside it."""

    git_dir: Path
    workdir: Path
    branch: str | None                      # the checked-out branch; None when HEAD is detached
    unborn: bool                            # HEAD names a branch with no commit yet
    config: dict[str, list[str]] = field(default_factory=dict)   # keys as git prints them

    @classmethod
    def discover(cls, directory: str | os.PathLike) -> Checkout:
        """The working tree `directory` is in (GitError, saying what to do, when there is none)."""
        where = os.path.abspath(directory)
        config = Background(run_git, ["config", "-z", "--get-regexp", _SEARCHED], cwd=where, check=False)
        proc = run_git(["rev-parse", "--absolute-git-dir", "--show-toplevel", "HEAD", "--symbolic-full-name",
                        "HEAD"], cwd=where, check=False)
        lines = proc.stdout.decode("utf-8", "surrogateescape").splitlines()
        if len(lines) < 2 or not lines[1]:
            msg = git_message(proc.stderr)
            config.result()
            if "not a git repository" in msg:
                raise GitError(f"{where} is not inside a git repository; run `git init` there first")
            if "must be run in a work tree" in msg:
                raise GitError(f"{where} is in a bare repository or a .git directory; run push from a "
                               f"working tree")
            raise GitError(f"could not open the repository at {where}: {msg}")
        unborn = proc.returncode != 0       # rev-parse stops at HEAD when it names no commit yet
        if unborn:
            ref = run_git(["symbolic-ref", "-q", "HEAD"], cwd=where, check=False).stdout.decode().strip()
        else:
            ref = lines[3] if len(lines) > 3 else "HEAD"
        branch = ref.removeprefix("refs/heads/") if ref.startswith("refs/heads/") else None
        return cls(Path(lines[0]), Path(lines[1]), branch, unborn, _parse_config(config.result().stdout))

    def get(self, key: str) -> str | None:
        """The value of a config key (the last one given, as git reads it), or None."""
        values = self.config.get(key)
        return values[-1] if values else None

    def remote_names(self) -> list[str]:
        """The remotes that have a URL, in config order."""
        names: list[str] = []
        for key in self.config:
            section, _, rest = key.partition(".")
            name, _, var = rest.rpartition(".")
            if section == "remote" and var in ("url", "pushurl") and name and name not in names:
                names.append(name)
        return names

    def push_url(self, remote: str) -> str | None:
        """The URL git pushes to for a configured remote, when config alone says it (no url.*.insteadOf
        or pushInsteadOf rewrites it); None when git must be asked (`git remote get-url --push`)."""
        if any(key.startswith("url.") for key in self.config):
            return None
        urls = self.config.get(f"remote.{remote}.pushurl") or self.config.get(f"remote.{remote}.url")
        return urls[0] if urls else None

    def git(self, *args: str, **kwargs) -> subprocess.CompletedProcess:
        """Run git in this working tree."""
        return run_git(["-C", str(self.workdir), *args], **kwargs)

    def background(self, *args: str, **kwargs) -> Background:
        """Start git in this working tree; `.result()` waits for it."""
        return Background(self.git, *args, **kwargs)

    def identity(self) -> dict[str, str]:
        """Author and committer variables for commit-tree: none when git has an identity to use, else
        puppemon@host (as the daemon signs), so a machine without user.email can still push."""
        if self.get("user.name") and self.get("user.email"):
            return {}
        if os.environ.get("GIT_AUTHOR_EMAIL") and os.environ.get("GIT_COMMITTER_EMAIL"):
            return {}
        import socket

        name, email = self.get("user.name") or "puppemon", f"puppemon@{socket.gethostname() or 'localhost'}"
        return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
                "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def _parse_config(out: bytes) -> dict[str, list[str]]:
    config: dict[str, list[str]] = {}
    for item in out.decode("utf-8", "surrogateescape").split("\0"):
        if item:
            key, _, value = item.partition("\n")
            config.setdefault(key, []).append(value)
    return config


class Objects:
    """Objects of one repository read through one `git cat-file --batch` process."""

    def __init__(self, checkout: Checkout) -> None:
        self._proc = subprocess.Popen(["git", "-C", str(checkout.workdir), "cat-file", "--batch"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.DEVNULL, env=git_env())

    def get(self, name: str) -> tuple[str, str, bytes] | None:
        """(oid, type, content) of an object name such as `<tree>:<path>` or a ref; None when missing."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        if "\n" in name:
            return None
        self._proc.stdin.write(name.encode("utf-8", "surrogateescape") + b"\n")
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().decode().split()
        if len(header) != 3:
            if not header:
                raise GitError("git cat-file --batch stopped answering")
            return None  # "<name> missing" or "ambiguous"
        oid, kind, size = header
        data = self._proc.stdout.read(int(size) + 1)[:-1]
        return oid, kind, data

    def lookup(self, tree: str, path: str) -> Entry | None:
        """The entry at `path` below `tree`, read from its directory's tree object (which has the modes)."""
        parent, _, name = path.strip("/").rpartition("/")
        found = self.get(f"{tree}:{parent}" if parent else tree)
        if found is None or found[1] != "tree" or not name:
            return None
        width = len(found[0]) // 2                      # 20 bytes of SHA-1, 32 of SHA-256
        data, at, wanted = found[2], 0, name.encode("utf-8", "surrogateescape")
        while at < len(data):
            space, nul = data.index(b" ", at), data.index(b"\0", at)
            if data[space + 1:nul] == wanted:
                return Entry(name, int(data[at:space], 8), data[nul + 1:nul + 1 + width].hex())
            at = nul + 1 + width
        return None

    def data(self, oid: str) -> bytes:
        """The content of a blob."""
        found = self.get(oid)
        if found is None:
            raise GitError(f"object {oid} is missing from the repository")
        return found[2]

    def commit_tree(self, name: str) -> tuple[str, str] | None:
        """(commit, its tree) for a commit name such as a ref; None when there is no such commit."""
        found = self.get(name)
        if found is None or found[1] != "commit":
            return None
        return found[0], found[2].split(b"\n", 1)[0].split()[1].decode()

    def close(self) -> None:
        if self._proc.stdin:
            self._proc.stdin.close()
        self._proc.wait()
        if self._proc.stdout:
            self._proc.stdout.close()


# One blob of `git ls-tree -r -l -z` output: its size (a path never holds NUL, so each match starts an entry)
_BLOB_SIZE = re.compile(rb"(?:\A|\0)[0-7]+ blob [0-9a-f]+ +([0-9]+)\t")


def listing(checkout: Checkout, tree: str) -> Background:
    """Start `git ls-tree -r -l` of `tree`, every blob below it with its size; read it with `total`."""
    return checkout.background("ls-tree", "-r", "-l", "-z", "--full-tree", tree)


def total(out: bytes) -> tuple[int, int]:
    """(files, bytes) of the blobs a `listing` names (a submodule is not a file)."""
    found = _BLOB_SIZE.findall(out)
    return len(found), sum(map(int, found))


class Totals:
    """The (files, bytes) of trees pushed from this repository, kept in .git/puppemon/totals.

    A tree's total never changes, so the next push's is its parent's plus what the diff between
    them adds and removes: no listing of the whole snapshot (`git ls-tree -l` reads the header
    of every blob) when the parent was pushed from here."""

    KEEP = 16

    def __init__(self, git_dir: Path) -> None:
        self.path = Path(git_dir) / "puppemon" / "totals"
        self.known: dict[str, tuple[int, int]] = {}
        try:
            for line in self.path.read_text().splitlines():
                tree, files, size = line.split()
                self.known[tree] = (int(files), int(size))
        except (OSError, ValueError):
            self.known = {}      # none yet, or a file this code did not write: list the tree instead

    def get(self, tree: str) -> tuple[int, int] | None:
        return self.known.get(tree)

    def add(self, tree: str, found: tuple[int, int]) -> None:
        self.known.pop(tree, None)
        self.known[tree] = found
        kept = list(self.known.items())[-self.KEEP:]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f"totals.{os.getpid()}")
            tmp.write_text("".join(f"{t} {files} {size}\n" for t, (files, size) in kept))
            os.replace(tmp, self.path)
        except OSError:
            pass  # a read-only repository: the next push lists its tree


def moved(base: tuple[int, int], out: bytes, sizes: dict[str, int]) -> tuple[int, int]:
    """The total of a diff-tree's new tree, from its old tree's `base` and `sizes` of `blobs(out)`."""
    files, size = base
    for old_mode, new_mode, old_oid, new_oid, status, _path in _raw(out):
        if status != "A" and old_mode != GITLINK:
            files, size = files - 1, size - sizes[old_oid]
        if status != "D" and new_mode != GITLINK:
            files, size = files + 1, size + sizes[new_oid]
    return files, size


def diff(checkout: Checkout, old_tree: str | None, new_tree: str) -> Background:
    """Start `git diff-tree` between two trees (None: the empty tree); read it with `changes`."""
    from puppemon.gitstore.objects import EMPTY_TREE

    return checkout.background("diff-tree", "-r", "-z", "--no-renames", "--no-commit-id",
                               old_tree or EMPTY_TREE, new_tree)


def changes(out: bytes, sizes: dict[str, int]) -> list[Change]:
    """diff-tree's raw output as Changes, in path order, sized from `sizes` (oid -> size of each of
    `blobs(out)`; a submodule, or a blob this repository lacks, is 0). A type change (a file that
    became a link) is a removal and an addition, as libgit2 reports it."""
    found: list[Change] = []
    for old_mode, new_mode, old_oid, new_oid, status, path in _raw(out):
        if status in ("D", "T"):
            found.append(Change("removed", path, old_mode, old_oid, sizes.get(old_oid, 0)))
        if status != "D":
            added = "added" if status in ("A", "T") else "changed"
            found.append(Change(added, path, new_mode, new_oid, sizes.get(new_oid, 0)))
    return found


def blobs(out: bytes) -> list[str]:
    """The blobs a diff-tree output names, old and new, whose sizes `changes` and `moved` need."""
    oids: set[str] = set()
    for old_mode, new_mode, old_oid, new_oid, status, _path in _raw(out):
        if status != "A" and old_mode != GITLINK:
            oids.add(old_oid)
        if status != "D" and new_mode != GITLINK:
            oids.add(new_oid)
    return sorted(oids)


def _raw(out: bytes):
    """(old mode, new mode, old oid, new oid, status, path) of each entry of `diff-tree -r -z` output."""
    parts = out.split(b"\0")
    for meta, raw in zip(parts[0::2], parts[1::2]):
        if meta:
            old_mode, new_mode, old_oid, new_oid, status = meta.lstrip(b":").decode().split()
            yield int(old_mode, 8), int(new_mode, 8), old_oid, new_oid, status, raw.decode("utf-8", "surrogateescape")


def sizes(checkout: Checkout, oids: list[str]) -> dict[str, int]:
    """oid -> size, from one `git cat-file --batch-check` (an object this repository lacks, as a partial
    clone may, is left out)."""
    if not oids:
        return {}
    out = checkout.git("cat-file", "--batch-check", input="".join(o + "\n" for o in oids).encode()).stdout
    found = {}
    for line in out.decode().splitlines():
        fields = line.split()
        if len(fields) == 3:        # else "<oid> missing"
            found[fields[0]] = int(fields[2])
    return found
