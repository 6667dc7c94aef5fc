"""Fetch and push through the git binary, so the user's ssh config, agent, credential helpers and CI
credentials apply; failures become one line that says why (a race lost, a hook refusing, the remote).
Which remote a command talks to when none is given is decided here too (pick_remote)."""
from __future__ import annotations

import subprocess
from collections.abc import Callable
from typing import TYPE_CHECKING

from puppemon.errors import PuppemonError
from puppemon.gitstore.command import GitError, PushRejected, RemoteMissingRef, git_message

if TYPE_CHECKING:
    from puppemon.gitstore.store import Store

Git = Callable[..., subprocess.CompletedProcess]   # git ARGS in one repository: Store.git, Checkout.git

# Lost races: the ref moved ("fetch first"), or another push held its lock at
# the same moment ("failed to update ref", "cannot lock ref").
RACES = ("fetch first", "non-fast-forward", "stale info", "atomic push failed",
         "failed to update ref", "failed to lock", "cannot lock ref")


def fetch_args(remote: str, refspecs: list[str]) -> list[str]:
    return ["fetch", "--quiet", "--no-tags", "--no-write-fetch-head", remote, *refspecs]


def fetch_result(proc: subprocess.CompletedProcess, remote: str) -> None:
    """Raise for a failed fetch: RemoteMissingRef when a named ref does not exist, else GitError."""
    if proc.returncode != 0:
        msg = git_message(proc.stderr)
        if "couldn't find remote ref" in msg:
            raise RemoteMissingRef(msg)
        raise GitError(f"could not fetch from {remote}: {msg}")


def fetch(git: Git, remote: str, refspecs: list[str], *, timeout: float | None = 300) -> None:
    """Fetch `refspecs` from `remote`; raise RemoteMissingRef when a named ref does not exist."""
    fetch_result(git(*fetch_args(remote, refspecs), check=False, timeout=timeout), remote)


def push_args(remote: str, refspecs: list[str], atomic: bool = False, thin: bool = True) -> list[str]:
    return (["push", "--porcelain", "--quiet"] + (["--atomic"] if atomic else []) + ([] if thin else ["--no-thin"])
            + [remote, *refspecs])


def push_result(proc: subprocess.CompletedProcess, remote: str) -> None:
    """Raise for a failed push: PushRejected when the remote's ref moved, else GitError saying why."""
    if proc.returncode == 0:
        return
    out = proc.stdout.decode("utf-8", "replace")
    rejected = [ln for ln in out.splitlines() if ln.startswith("!")]
    if rejected and all(any(r in ln for r in RACES) for ln in rejected):
        raise PushRejected(f"the remote's {', '.join(sorted({r.split()[1].split(':')[-1] for r in rejected}))} moved")
    raise GitError(f"could not push to {remote}: {push_failure(proc.stderr, out)}")


def push(git: Git, remote: str, refspecs: list[str], *, atomic: bool = False, thin: bool = True,
         timeout: float | None = 300) -> None:
    """Push without force (unless a refspec starts with +); PushRejected when the remote moved."""
    push_result(git(*push_args(remote, refspecs, atomic, thin), check=False, timeout=timeout), remote)


def push_failure(stderr: bytes, porcelain: str) -> str:
    """Why a push failed, for people. When no ref got a status, the push stopped before reaching the
    remote: a local hook (pre-push) refused it, and what it printed is the reason."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    generic = "error: failed to push some refs"
    statuses = [ln for ln in porcelain.splitlines() if ln[:1] in ("!", "=", "*", "+", "-", " ")]
    said = [ln for ln in lines if not ln.startswith((generic, "To ", "hint:"))]
    if not statuses and said and any(ln.startswith(generic) for ln in lines) and not any(
            ln.startswith(("fatal:", "error: src refspec")) for ln in said):
        return "the pre-push hook refused it: " + " ".join(said[-5:])
    return git_message(stderr) if stderr.strip() else porcelain.strip()


def pick_remote(remote: str | None, names: list[str], upstream: str | None) -> str:
    """The remote to push to: the one given, else the current branch's upstream remote, else origin
    (else the only one)."""
    if remote:
        return remote
    if upstream and upstream in names:
        return upstream
    if "origin" in names:
        return "origin"
    if len(names) == 1:
        return names[0]
    raise PuppemonError("no remote to push to; pass --remote NAME|URL, or add one with "
                        "`git remote add origin URL`")


def resolve_remote(store: Store, remote: str | None) -> str:
    """pick_remote for a Store (the commands that read and write the runs branch)."""
    if remote:
        return remote
    head = store.repo.references.get("HEAD")
    branch = head.target.removeprefix("refs/heads/") if head is not None and isinstance(head.target, str) else None
    return pick_remote(None, store.remote_names(), store.config(f"branch.{branch}.remote") if branch else None)
