"""The runs branch as a user's clone holds it: brought up to date for reading, and written by `run --record`."""
from __future__ import annotations

import sys
from pathlib import Path

from puppemon.errors import PuppemonError
from puppemon.gitstore import GitError, Store
from puppemon.history.recorder import Recorder
from puppemon.history.records import RunContext, RunStore, run_files, run_message, run_record
from puppemon.gitstore.transport import resolve_remote
from puppemon.project.snapshot import source_info, user_at_host


def _remote_or_none(store: Store, remote: str | None) -> str | None:
    try:
        return resolve_remote(store, remote)
    except PuppemonError:
        return None  # no remote configured: local records only


def open_runs(directory: str | Path, remote: str | None, fetch: bool = True,
              branch: str = "runs") -> tuple[Store, RunStore, str | None]:
    """The project's repository and its `runs` branch, first brought up to date with the remote's.

    The remote's records land in the local `runs` branch (so `git log runs` shows
    them); local records not yet published stay on top. An unreachable remote is
    a warning on stderr: the local records are still shown. Returns the remote used
    (None when the repository has none).
    """
    store = Store.discover(directory)
    remote = _remote_or_none(store, remote)
    if fetch and remote is not None:
        try:
            Recorder(store, remote=remote, branch=branch).sync(push=False)
        except GitError as exc:
            print(f"warning: {exc.message}; showing local records", file=sys.stderr)
    return store, RunStore(store, f"refs/heads/{branch}"), remote


class RecordTarget:
    """Where `puppemon run --record` puts its record: the project's local `runs` branch, then the remote."""

    def __init__(self, store: Store, remote: str | None, push: bool, branch: str = "runs") -> None:
        self.store, self.remote, self.push, self.branch = store, remote, push, branch
        self.recorder = Recorder(store, remote=remote, branch=branch)

    def record(self, result) -> str:
        """Commit `result` as a manual run and publish it; return the line saying where it went."""
        _, head = source_info(self.store)
        # Not a deployed flows commit: the code was the working tree as it was, on top of HEAD.
        trigger = {"kind": "manual", "by": user_at_host(), "code": "working tree"}
        rec = run_record(result, RunContext(result.run_id, result.flow, trigger, source_commit=head or ""))
        self.recorder.add(run_files(rec, result.log, result.result, result.has_result, result.outputs),
                          run_message(rec))
        where = f"recorded run {rec['id']} on {self.branch}"
        if self.remote is None:
            return f"{where} (not pushed: the repository has no remote; pass --remote NAME|URL)"
        if not self.push:
            return f"{where} (not pushed: --no-push; it goes out with the next publish)"
        try:
            self.recorder.sync(push=True)
        except GitError as exc:
            return f"{where} (not pushed: {exc.message}; it goes out with the next publish)"
        return f"{where} (pushed to {self.remote})"


def open_target(directory: str | Path, remote: str | None, push: bool) -> RecordTarget:
    """The RecordTarget for the project at `directory` (remote resolved as `puppemon push` does)."""
    store = Store.discover(directory)
    return RecordTarget(store, _remote_or_none(store, remote), push)
