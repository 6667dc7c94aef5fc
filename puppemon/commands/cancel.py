"""`puppemon cancel RUN_ID`: ask the daemon running it to stop it, through a request on the runs branch."""
from __future__ import annotations

from datetime import datetime, timezone

from puppemon.errors import PuppemonError


def main(run_id: str, remote: str | None = None, directory: str = ".") -> int:
    """Write a cancel request and print its id.

    The daemon that has the run in flight (or queued) stops it and records it
    `cancelled`; the request is marked done next to it (`<id>.done.json`). If the
    run already finished, the request is marked done with that outcome; a run no
    daemon knows yet keeps the request waiting (for up to 7 days).
    """
    from puppemon.commands.reading import forget
    from puppemon.formats import RUN_ID
    from puppemon.gitstore import Store
    from puppemon.history.requests import cancel_request, send
    from puppemon.project.snapshot import resolve_remote, user_at_host

    if not RUN_ID.match(run_id):
        raise PuppemonError(f"{run_id!r} is not a run id (expected the whole id, e.g. 20261125T083000Z-7f3a9c; "
                            f"see `puppemon status` for runs in flight)")
    store = Store.discover(directory)
    remote = resolve_remote(store, remote)
    body = cancel_request(run_id, user_at_host(), datetime.now(timezone.utc))
    forget(store.git_dir)   # the next read here fetches what the cancel leads to
    send(store, remote, body)
    print(body["id"])
    return 0
