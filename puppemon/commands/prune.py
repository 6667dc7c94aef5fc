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

    from puppemon.commands.reading import forget
    from puppemon.formats import parse_moment
    from puppemon.history.clone import open_runs
    from puppemon.history.layout import check as check_layout
    from puppemon.history.recorder import Recorder
    from puppemon.gitstore import GitError
    from puppemon.history.retention import message, plan
    from puppemon.history.rotation import prune_archives

    cutoff = parse_moment(before, "--before")
    if cutoff > datetime.now(timezone.utc):
        raise PuppemonError(f"--before {before!r} is in the future; nothing recorded yet could be that old")
    store, runs, remote = open_runs(directory, remote, fetch=fetch)
    if remote is not None and push:  # before anything is written (history/layout.py)
        check_layout(store, runs.tip, f"runs on {remote}")
    pruned = plan(store, runs.tip, cutoff)
    # Archive refs change only by a push the remote accepted (history/rotation.py): not with --no-push.
    archives = remote is None or push
    archived = prune_archives(store, remote, cutoff, dry_run=True)
    if not pruned.paths and not archived.paths:
        print(f"nothing to prune: no records from before {pruned.before.isoformat()}")
        return 0
    if dry_run:
        print(f"dry run: would prune {_both(pruned, archived)}")
        return 0
    if archives and archived.paths:
        try:
            archived = prune_archives(store, remote, cutoff)
        except GitError as exc:
            raise PuppemonError(f"nothing pruned: the archive refs could not be updated: {exc.message}") from None
    forget(store.git_dir)
    recorder = Recorder(store, remote=remote)
    if pruned.paths:
        recorder.add({path: None for path in pruned.paths}, message(pruned))
    where = ""
    if remote is not None and push:
        where = f" (pushed to {remote})" if recorder.publish() else " (not pushed: the remote is unreachable)"
    note = "" if archives or not archived.paths else f"; archives left as they are (--no-push): {archived.summary()}"
    print(f"pruned {_both(pruned, archived if archives else None)}{where}; `git log runs` still has them{note}")
    return 0


def _both(pruned, archived) -> str:
    if not archived or not archived.paths:
        return pruned.summary()
    if not pruned.paths:
        return f"{archived.summary()} from archive refs"
    return f"{pruned.summary()} from the tip and {archived.summary()} from archive refs"
