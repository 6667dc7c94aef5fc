"""`puppemon prune --purge --before DATE` / `--purge-run ID`: rewrite the runs history (and the archive refs)
without those records, for good: the one command that force-pushes."""
from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime, timezone

from puppemon.errors import PuppemonError


def main(before: str | None, purge: bool, purge_runs: tuple[str, ...], remote: str | None = None,
         dry_run: bool = False, push: bool = True, fetch: bool = True, yes: bool = False,
         directory: str = ".") -> int:
    from puppemon.formats import parse_moment

    if not (purge or purge_runs):
        raise PuppemonError("--yes confirms a purge: use it with --purge or --purge-run")
    if purge and before is None:
        raise PuppemonError("--purge needs --before DATE (whole days before it are purged); "
                            "to purge single runs use --purge-run ID")
    if not fetch or not push:
        raise PuppemonError("a purge always fetches and pushes: it rewrites what the remote holds "
                            "(drop --no-fetch and --no-push)")
    cutoff = parse_moment(before, "--before") if purge else None
    if cutoff is not None and cutoff > datetime.now(timezone.utc):
        raise PuppemonError(f"--before {before!r} is in the future; nothing recorded yet could be that old")
    ask = input if sys.stdin.isatty() else None
    return run_purge(cutoff, purge_runs, remote, dry_run, yes, directory, ask)


def run_purge(cutoff: datetime | None, run_ids: tuple[str, ...], remote: str | None, dry_run: bool, yes: bool,
              directory: str, ask: Callable[[str], str] | None, now: datetime | None = None) -> int:
    """Rewrite the runs history (and the archive refs) without the records asked for, once `ask` (the
    question, the answer) said yes or `yes` is given; without either, refuse."""
    from puppemon.formats import id_day
    from puppemon.gitstore import Store
    from puppemon.history import purge
    from puppemon.history.recorder import writer_lock
    from puppemon.gitstore.transport import resolve_remote

    for run_id in run_ids:
        try:
            id_day(run_id)
        except PuppemonError as exc:
            raise PuppemonError(f"--purge-run: {exc.message}") from None
    if not dry_run and not yes and ask is None:
        raise PuppemonError("a purge rewrites history for good: confirm it at a terminal, or pass --yes")
    selection = purge.Selection(cutoff.astimezone(timezone.utc).date() if cutoff else None, frozenset(run_ids))
    store = Store.discover(directory)
    try:
        remote = resolve_remote(store, remote)
    except PuppemonError:
        remote = None  # no remote configured: this repository's own history is purged
    with writer_lock(store, 10.0):
        if remote is not None:
            _refuse_while_daemons_run(store, remote, now or datetime.now(timezone.utc))
        work = purge.plan(store, remote, selection)
        if work.missing():
            raise PuppemonError(f"no record of run {', '.join(work.missing())} on {remote or 'this repository'}: "
                                f"nothing purged (list runs with `puppemon runs`)")
        if not work.changed:
            print(f"nothing to purge: no {_what(selection)} in any commit")
            return 0
        if dry_run:
            print(f"dry run: would purge {work.what()} from {work.where()}")
            return 0
        if not yes:
            try:
                answer = ask(f"Rewrite {work.where()}, taking {work.what()} out of every commit for good, and "
                             f"force-push? [y/N] ")
            except EOFError:
                answer = ""
            if answer.strip().lower() not in ("y", "yes"):
                print("not purged: nothing changed")
                return 1
        purge.apply(work)
    pushed = f" (force-pushed to {remote}; other clones keep the old records until they fetch and gc)" if remote else ""
    print(f"purged {work.what()} from every commit{pushed}")
    return 0


def _refuse_while_daemons_run(store, remote: str, now: datetime) -> None:
    """A daemon writing while its history is rewritten makes the lease fail, and one of an older
    puppemon would merge the old history, purged records included, back in."""
    from puppemon.formats import plural
    from puppemon.history.status import STALE_AFTER, fetch_status, heartbeating

    fetch_status(store, remote)
    alive = heartbeating(store, now)
    if alive:
        names = ", ".join(str(d.get("name")) for d in alive)
        raise PuppemonError(f"{plural(len(alive), 'daemon')} ({names}) still heartbeat on {remote}: stop them "
                            f"before purging (a daemon known to be dead stops counting {STALE_AFTER / 60:g} "
                            f"minutes after its last heartbeat)")


def _what(selection) -> str:
    parts = [f"records from before {selection.before.isoformat()}"] if selection.before else []
    parts += [f"run {run_id}" for run_id in sorted(selection.run_ids)]
    return " or ".join(parts)
