"""`puppemon prune`: take old records out of the runs branch's tip (history keeps them); `--purge` and
`--purge-run` are commands/purge.py."""
from __future__ import annotations

from datetime import datetime, timezone

from puppemon.errors import PuppemonError


def main(before: str | None, remote: str | None = None, dry_run: bool = False, push: bool = True,
         fetch: bool = True, directory: str = ".", purge: bool = False, purge_runs: tuple[str, ...] = (),
         yes: bool = False) -> int:
    if purge or purge_runs or yes:
        from puppemon.commands import purge as purge_command

        return purge_command.main(before, purge, purge_runs, remote, dry_run, push, fetch, yes, directory)
    if before is None:
        raise PuppemonError("prune needs --before DATE|DURATION (e.g. --before 90d)")

    from puppemon.formats import parse_moment
    from puppemon.history.clone import open_runs
    from puppemon.history.recorder import Recorder
    from puppemon.history.retention import message, plan

    cutoff = parse_moment(before, "--before")
    if cutoff > datetime.now(timezone.utc):
        raise PuppemonError(f"--before {before!r} is in the future; nothing recorded yet could be that old")
    store, runs, remote = open_runs(directory, remote, fetch=fetch)
    pruned = plan(store, runs.tip, cutoff)
    if not pruned.paths:
        print(f"nothing to prune: no records from before {pruned.before.isoformat()}")
        return 0
    if dry_run:
        print(f"dry run: would prune {pruned.summary()}")
        return 0
    recorder = Recorder(store, remote=remote)
    recorder.add({path: None for path in pruned.paths}, message(pruned))
    where = ""
    if remote is not None and push:
        where = f" (pushed to {remote})" if recorder.publish() else " (not pushed: the remote is unreachable)"
    print(f"pruned {pruned.summary()}{where}; `git log runs` still has them")
    return 0
