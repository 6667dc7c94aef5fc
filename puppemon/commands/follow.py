"""`puppemon logs -f RUN_ID|FLOW`: a run's output as it comes, through git, until it ends."""
from __future__ import annotations

import os
import sys
import time

from puppemon.errors import PuppemonError


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def target(follower, history, tip: str | None, which: str, find) -> tuple[str | None, str | None]:
    """(run id, flow) of the run `which` names: an id (or the id of a request: the run it led to), a
    flow name (its latest run in flight, else its latest record), or a recorded run's id prefix
    (`find(history, which)` gives the (run id, flow) of any other: logs.py's lookup, passed in)."""
    from puppemon.formats import RUN_ID, is_flow_name
    from puppemon.history.live import running
    from puppemon.history.requests import read_claim

    if RUN_ID.match(which):
        claim = read_claim(follower.store, tip, which)
        if claim:
            return claim["run_id"], claim.get("flow")
        from puppemon.commands.locating import locate

        located = locate(history, which, None, unseen=True)
        if located.state == "unseen":
            return which, None   # not requested yet, or a run whose daemon has not said so yet: wait for it
        return located.id, located.flow
    if is_flow_name(which) and (in_flight := running(follower.store, which) or _in_flight(follower, which)):
        return in_flight[-1], which
    return find(history, which)  # the flow's latest record, or a run's id prefix, in whatever state


def _in_flight(follower, flow: str) -> list[str]:
    """The runs of `flow` the daemons' status refs show in flight (a daemon that publishes no live logs)."""
    from datetime import datetime, timezone

    from puppemon.history.lookup import in_flight
    from puppemon.history.status import heartbeating

    if follower.no_daemon():   # fetches the status refs
        return []
    flying = in_flight(heartbeating(follower.store, datetime.now(timezone.utc)))
    return sorted(run_id for run_id, run in flying.items() if run["flow"] == flow)


def follow_run(which: str, remote: str | None, directory: str, http: str | None, find) -> int:
    """Print the run's output as it comes and, once it is recorded, the rest of its log and its outcome;
    exit with the code `trigger --wait` gives it."""
    from puppemon.commands.common import write_bytes
    from puppemon.commands.reading import open_history
    from puppemon.history.follow import Follower

    history = open_history(directory, remote, None)
    if history.remote is None:
        raise PuppemonError("-f follows a run through a remote, and this repository has none: "
                            "pass --remote NAME|URL")
    hook = (http, os.environ.get("PUPPEMON_HTTP_TOKEN") or None) if http else None
    follower = Follower(history.store, history.remote, write_bytes, _say, http=hook)
    run_id = flow = None
    said = False
    try:
        while True:
            polled = time.monotonic()
            tip = follower.fetch()
            if run_id is None or flow is None:
                run_id, flow = target(follower, history, tip, which, find)
            record = follower.step(tip, run_id, flow)
            if record is not None:
                return follower.end(record)
            if not follower.started and not said:
                said = True
                _say(f"no output of run {run_id} yet (it has not started, or its daemon publishes no live logs): "
                     "waiting ...")
            follower.between_polls(run_id, polled)
    except KeyboardInterrupt:
        _say(f"stopped following run {run_id or which}; it goes on (`puppemon cancel {run_id or which}` stops it)")
        return 130
