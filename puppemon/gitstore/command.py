"""Running the git binary: one helper whose failure names the command, exit code and git's message,
in an environment that cannot point git at another repository than the one named."""
from __future__ import annotations

import os
import subprocess
import threading
from typing import Mapping

from puppemon.errors import PuppemonError

# Variables that make git look at another repository, index or object store than
# the one we name. Anything else (GIT_SSH_COMMAND, GIT_CONFIG_*, GIT_ASKPASS,
# proxies, ...) is how the user or CI set up transport, and must pass through.
_REPO_LOCATING = {
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_COMMON_DIR", "GIT_NAMESPACE", "GIT_PREFIX",
    "GIT_QUARANTINE_PATH", "GIT_INTERNAL_SUPER_PREFIX", "GIT_CEILING_DIRECTORIES",
    "GIT_DISCOVERY_ACROSS_FILESYSTEM", "GIT_REFLOG_ACTION", "GIT_EDITOR", "GIT_PAGER",
}


class GitError(PuppemonError):
    """A git command or object operation failed."""


class RefConflict(GitError):
    """A ref was not where the caller expected it (compare-and-swap lost)."""


class PushRejected(GitError):
    """The remote refused a push because its ref moved (not a fast-forward)."""


class RemoteMissingRef(GitError):
    """The remote has no such ref."""


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for running git: inherited, minus repository-locating GIT_* variables."""
    env = {k: v for k, v in os.environ.items() if k not in _REPO_LOCATING}
    # Messages are parsed below (missing refs, rejected pushes); keep them untranslated.
    env["LC_ALL"] = "C"
    env.setdefault("GIT_TERMINAL_PROMPT", "0")
    env.update(token_config(env))
    # git needs none of puppemon's own variables (its token, secrets): a git process a flow could look at
    # (/proc/<pid>/environ, same user) does not carry them
    env = {k: v for k, v in env.items() if not k.startswith("PUPPEMON_")}
    if extra:
        env.update(extra)
    return env


def token_config(env: Mapping[str, str]) -> dict[str, str]:
    """`PUPPEMON_GIT_TOKEN` as an `http.extraheader` for this git call alone (GIT_CONFIG_COUNT/KEY/VALUE),
    sent as actions/checkout sends a job's token (basic auth, user `PUPPEMON_GIT_USER`, default
    x-access-token). Nothing is written to a git config, and runs never inherit PUPPEMON_* variables, so
    the token reaches puppemon's own fetches and pushes only (docs/serverless.md)."""
    import base64

    token = env.get("PUPPEMON_GIT_TOKEN")
    if not token:
        return {}
    user = env.get("PUPPEMON_GIT_USER") or "x-access-token"
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    try:
        count = int(env.get("GIT_CONFIG_COUNT") or 0)
    except ValueError:
        count = 0
    return {"GIT_CONFIG_COUNT": str(count + 1), f"GIT_CONFIG_KEY_{count}": "http.extraheader",
            f"GIT_CONFIG_VALUE_{count}": f"AUTHORIZATION: basic {basic}"}


def run_git(args: list[str], cwd: str | os.PathLike | None = None, *, env: Mapping[str, str] | None = None,
            input: bytes | None = None, check: bool = True, timeout: float | None = None,
            ) -> subprocess.CompletedProcess:
    """Run `git ARGS`; on failure raise GitError naming the command, exit code and git's message."""
    cmd = ["git", *args]
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=git_env(env), input=input, capture_output=True,
                              timeout=timeout, stdin=None if input is not None else subprocess.DEVNULL)
    except FileNotFoundError:
        raise GitError("the git program was not found; install git (e.g. `apt install git`)") from None
    except subprocess.TimeoutExpired:
        raise GitError(f"`{' '.join(cmd)}` took longer than {timeout:g}s; is the remote reachable?") from None
    if check and proc.returncode != 0:
        raise GitError(f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {git_message(proc.stderr)}")
    return proc


class Background:
    """A call (such as `run_git`) in a thread, so a caller can have several git processes running at
    once and wait for each where it needs the answer."""

    def __init__(self, target, *args, **kwargs) -> None:
        self._value = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target, args, kwargs), daemon=True)
        self._thread.start()

    def _run(self, target, args: tuple, kwargs: dict) -> None:
        try:
            self._value = target(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for it
            self._error = exc

    def result(self):
        """Wait for the call; what it returned, or raise what it raised."""
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


_NOISE = ("Please make sure you have the correct access rights", "and the repository exists.")


def git_message(stderr: bytes) -> str:
    """The informative part of git's stderr, on one line.

    When the transport failed, the cause is what ssh (or the remote) printed
    before git's generic "Could not read from remote repository", so keep it.
    """
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(_NOISE)]
    generic = "fatal: Could not read from remote repository."
    if generic in lines:
        cause = [ln for ln in lines[:lines.index(generic)] if not ln.startswith(("warning:", "hint:"))]
        keep = cause[-2:] + [generic]
    else:
        keep = [ln for ln in lines if ln.startswith(("fatal:", "error:", "remote: error", "ERROR"))] or lines
    text = " ".join(ln.removeprefix("fatal: ").removeprefix("error: ") for ln in keep[-3:])
    return text or "no message from git"
