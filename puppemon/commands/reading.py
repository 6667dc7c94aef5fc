"""How `runs`, `logs` and `status` bring the remote's history here before reading it.

By default they fetch first, unless this repository fetched the same remote moments ago
(FETCH_WINDOW seconds; PUPPEMON_FETCH_WINDOW sets it, 0 always fetches): a script that
lists runs and then reads the logs of each pays one fetch, not one per command. Seeing a
remote a few seconds old is what a fetch a few seconds later would have shown, except
after a change this repository itself made; so every command that writes to the remote
from here (push, trigger, cancel, prune, run --record) forgets the last fetch, and
`logs RUN_ID` fetches after all when the run is not here yet. `--fetch` always fetches,
`--no-fetch` never does.

A successful fetch is remembered as the time of a file under .git/puppemon/fetched/,
one per remote (its name and configured URL: a re-pointed remote is fetched again) and
kind (the runs branch; for `status`, the daemons' status refs as well).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from puppemon.errors import PuppemonError

FETCH_WINDOW = 5.0
WINDOW_VARIABLE = "PUPPEMON_FETCH_WINDOW"
STAMPS = Path("puppemon") / "fetched"       # below the git dir


@dataclass
class History:
    """What a read command reads: the repository, its runs branch, the remote (None: there is none)
    and whether the remote was fetched just now."""

    store: object
    runs: object
    remote: str | None
    fetched: bool


def window() -> float:
    """The seconds within which a read skips fetching a remote it fetched already."""
    text = os.environ.get(WINDOW_VARIABLE, "").strip()
    if not text:
        return FETCH_WINDOW
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise PuppemonError(f"{WINDOW_VARIABLE}={text!r}: expected a number of seconds (0 always fetches)")
    return value


def _stamp(git_dir: Path, store, remote: str, status: bool) -> Path:
    key = f"{remote}\0{store.config(f'remote.{remote}.url') or ''}\0{'status' if status else 'runs'}"
    return Path(git_dir) / STAMPS / hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:20]


def fetched_recently(store, remote: str, status: bool = False) -> bool:
    """Whether this repository fetched `remote` (with `status`: its status refs too) successfully less
    than window() seconds ago."""
    seconds = window()
    try:
        age = time.time() - _stamp(store.git_dir, store, remote, status).stat().st_mtime
    except OSError:
        return False
    return 0 <= age < seconds


def remember(store, remote: str, status: bool = False) -> None:
    path = _stamp(store.git_dir, store, remote, status)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(remote + "\n")
    except OSError:
        pass  # a read-only repository: every read fetches, as it did before


def forget(git_dir: str | os.PathLike | None) -> None:
    """This repository is about to change a remote: its next read fetches whatever the window."""
    if git_dir is not None:
        shutil.rmtree(Path(git_dir) / STAMPS, ignore_errors=True)


def open_history(directory: str, remote: str | None, fetch: bool | None, status: bool = False) -> History:
    """The runs branch, brought up to date with the remote's first when `fetch` says so (None: unless
    fetched within the window); with `status`, the daemons' status refs too. An unreachable remote is
    a warning: what is here is shown."""
    from puppemon.gitstore import GitError, Store
    from puppemon.history.recorder import Recorder
    from puppemon.history.records import RunStore
    from puppemon.gitstore.transport import resolve_remote

    store = Store.discover(directory)
    try:
        remote = resolve_remote(store, remote)
    except PuppemonError:
        remote = None            # no remote configured: local records only
        if not status and fetch is not False:
            print("note: this repository has no remote: showing local records only (pass --remote NAME|URL)",
                  file=sys.stderr)
    fetched = False
    if remote is not None and (fetch or (fetch is None and not fetched_recently(store, remote, status))):
        try:
            Recorder(store, remote=remote).sync(push=False)
            if status:
                from puppemon.history.status import fetch_status

                fetch_status(store, remote)
            fetched = True
            remember(store, remote)
            if status:
                remember(store, remote, status=True)
        except GitError as exc:
            print(f"warning: {exc.message}; showing {'the status last fetched' if status else 'local records only'}",
                  file=sys.stderr)
    return History(store, RunStore(store, "refs/heads/runs"), remote, fetched)
