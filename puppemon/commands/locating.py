"""Finding a run by id or prefix for `logs`, `cancel` and `runs ID` (history/lookup.py), with the daemons'
status refs fetched only when a run's state depends on them."""
from __future__ import annotations

import sys
from datetime import datetime, timezone

from puppemon.commands.reading import History, fetched_recently, remember


def running(history: History, fetch: bool | None):
    """A function giving the runs in flight (history/lookup.py `Running`), the daemons' status refs
    fetched the first time it is called when `fetch` says so (None: unless fetched within the window)."""
    seen: list[dict] = []

    def runs() -> dict[str, dict]:
        if not seen:
            seen.append(_in_flight(history, fetch))
        return seen[0]

    return runs


def _in_flight(history: History, fetch: bool | None) -> dict[str, dict]:
    from puppemon.gitstore import GitError
    from puppemon.history.lookup import in_flight
    from puppemon.history.status import fetch_status, heartbeating

    store, remote = history.store, history.remote
    if remote is not None and (fetch or (fetch is None and not fetched_recently(store, remote, status=True))):
        try:
            fetch_status(store, remote)
            remember(store, remote, status=True)
        except GitError as exc:
            print(f"warning: {exc.message}; using the daemons' status last fetched", file=sys.stderr)
    return in_flight(heartbeating(store, datetime.now(timezone.utc)))


def locate(history: History, which: str, fetch: bool | None, unseen: bool = False):
    """The run `which` names (an id or a unique part of one), as history/lookup.py `Located` (`unseen`: as
    there)."""
    from puppemon.history.lookup import locate as find

    return find(history.runs, which, datetime.now(timezone.utc), running(history, fetch), unseen)
