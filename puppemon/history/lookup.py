"""A run by its id, or a unique part of it, in whatever state it is (`logs`, `cancel`, `runs ID`).

A request's id is the id of the run it asks for (claims written by older daemons name another run id:
the claim's `run_id` is then the run's). Where each state shows:

    requested  requests/<yyyy>/<mm>/<dd>/<id>.json on the runs branch, not claimed
    queued     claimed, not recorded, and in flight in no heartbeating daemon's status
    running    in flight in a heartbeating daemon's status (refs/puppemon/status/<daemon>)
    finished   its run.json, on the runs tip or in an archive ref
    refused    `<id>.done.json` says a daemon refused the request

Like RunStore.find, an id or prefix that names a day (`20261125...`) is looked up in that day's
directories; any other text is looked for inside the ids of the recorded runs, of the requests of the
last DAYS days and of the runs in flight.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from puppemon.errors import PuppemonError
from puppemon.formats import RUN_ID, local_time, request_base
from puppemon.history.records import RunStore, find_record, is_recorded, one_line
from puppemon.gitstore import TooLarge
from puppemon.history.requests import MAX_SIZE, BadRequest, check_request, read_claim, recent_dirs

UNFINISHED = ("requested", "queued", "running")
SHOWN = 10  # candidates an ambiguous id lists


@dataclass
class Located:
    """One run and the state it is in."""

    id: str
    flow: str
    state: str                   # requested, queued, running, finished, refused (or unseen: `locate`)
    record: dict | None = None   # finished: its run.json
    daemon: str | None = None    # the daemon that claimed it (or runs it, or recorded it)
    since: str | None = None     # when it was requested (requested), claimed (queued), started (running)
    reason: str | None = None    # refused: why

    def describe(self) -> str:
        """`run 2026...-7f3a9c (hello) is queued on d1` and the like, for a person."""
        head = f"run {self.id} ({self.flow})"
        if self.state == "requested":
            return f"{head} is requested: no daemon has taken it yet"
        if self.state == "queued":
            return f"{head} is queued on {self.daemon}: it has not started yet"
        if self.state == "running":
            return f"{head} is running on {self.daemon} since {local_time(self.since, True)}"
        if self.state == "refused":
            return f"{head} was refused by {self.daemon}: {self.reason}"
        return f"{head} finished: {one_line((self.record or {}).get('status', '?'), 40)}"


Running = Callable[[], dict[str, dict]]   # run id -> {"daemon", "flow", "started"} of the runs in flight


def in_flight(statuses: list[dict]) -> dict[str, dict]:
    """The runs in flight that daemons' status.json files list (history/status.py `heartbeating`)."""
    found = {}
    for status in statuses:
        for run in status.get("in_flight") or []:
            if isinstance(run.get("run_id"), str) and RUN_ID.match(run["run_id"]):
                found[run["run_id"]] = {"daemon": status.get("name"), "flow": run.get("flow"),
                                        "started": run.get("started")}
    return found


def _matcher(which: str) -> Callable[[str], bool]:
    return (lambda i: i.startswith(which)) if re.match(r"[0-9]{8}", which) else (lambda i: which in i)


def _request_dirs(which: str, now: datetime) -> list[str]:
    day = re.match(r"([0-9]{4})([0-9]{2})([0-9]{2})", which)
    return [f"requests/{day[1]}/{day[2]}/{day[3]}"] if day else recent_dirs(now)


def _request_ids(runs: RunStore, base: str, match: Callable[[str], bool]) -> list[str]:
    names = {e.name for e in runs.store.listdir(runs.tip, base)} if runs.tip else set()
    return sorted(n[:-5] for n in names if n.endswith(".json") and not n.endswith((".claim.json", ".done.json"))
                  and RUN_ID.match(n[:-5]) and match(n[:-5]))


def _of_request(runs: RunStore, rid: str, running: Running) -> Located | None:
    """What became of the run request `rid` (None: it is no run request that can be read)."""
    store, tip, base = runs.store, runs.tip, request_base(rid)
    try:
        body = check_request(store.read(tip, f"{base}.json", MAX_SIZE) or b"", rid)
    except (BadRequest, TooLarge):
        return None
    if body["kind"] != "run":
        return None
    claim = read_claim(store, tip, rid)
    run_id = claim["run_id"] if claim else rid
    record = find_record(store, tip, run_id, body["flow"])
    if record is not None:
        return Located(run_id, record["flow"], "finished", record, record.get("daemon"))
    if is_recorded(store, tip, run_id):
        return None  # a record that cannot be read: RunStore.record says so
    if claim is None:
        done = _refusal(store, tip, base)
        if done is not None:
            return Located(rid, body["flow"], "refused", daemon=done[0], reason=done[1])
        return Located(rid, body["flow"], "requested", since=body.get("time"))
    flying = running().get(run_id)
    if flying is not None:
        return Located(run_id, body["flow"], "running", daemon=flying["daemon"], since=flying["started"])
    return Located(run_id, body["flow"], "queued", daemon=claim["daemon"], since=claim.get("time"))


def _refusal(store, tip: str, base: str) -> tuple[str, str] | None:
    """(daemon, reason) of a request refused (`<id>.done.json`), or None."""
    import json

    try:
        data = store.read(tip, f"{base}.done.json", MAX_SIZE)
        done = json.loads(data) if data else None
    except (ValueError, RecursionError, TooLarge):
        done = None
    if not isinstance(done, dict) or done.get("outcome") != "refused":
        return None
    return one_line(done.get("daemon", "?"), 100), one_line(done.get("reason", "?"))


def candidates(runs: RunStore, which: str, now: datetime, running: Running) -> list[Located]:
    """Every run whose id matches `which`, in whichever state (see the module's docstring)."""
    match, found = _matcher(which), {}
    for flow, run_id in runs.matches(which):
        found[run_id] = Located(run_id, flow, "finished")  # its record is read once it is the one
    for base in _request_dirs(which, now):
        for rid in _request_ids(runs, base, match):
            if rid in found:
                continue
            located = _of_request(runs, rid, running)
            if located is not None and located.id not in found:
                found[located.id] = located
    if not found:
        for run_id, run in running().items():
            if match(run_id):
                found[run_id] = Located(run_id, run["flow"], "running", daemon=run["daemon"], since=run["started"])
    return sorted(found.values(), key=lambda c: c.id)


def locate(runs: RunStore, which: str, now: datetime, running: Running, unseen: bool = False) -> Located:
    """The one run whose id is, or uniquely matches, `which`; an error says when none or several do.
    With `unseen`, a whole id nothing shows yet is that run, in state "unseen" (flow "": a run a daemon
    has started and not said so yet, or a request still on its way), for those who wait for it."""
    if not which or not re.fullmatch(r"[0-9A-Za-z-]+", which):
        raise PuppemonError(f"{which!r} is not a run id or part of one (e.g. 20261125T083000Z-7f3a9c)")
    found = candidates(runs, which, now, running)
    if not found and unseen and RUN_ID.match(which):
        return Located(which, "", "unseen")
    if not found and not runs.tip and not runs.archives:
        raise PuppemonError("no runs recorded yet")
    if not found:
        raise PuppemonError(f"no run with id {which!r}; list runs with `puppemon runs`")
    if len(found) > 1:
        lines = [f"  {c.id}  {c.flow}  {c.state}" for c in found[:SHOWN]]
        more = [f"  ... and {len(found) - SHOWN} more"] if len(found) > SHOWN else []
        raise PuppemonError(f"{which!r} matches {len(found)} runs; give more of the id:\n"
                            + "\n".join(lines + more))
    one = found[0]
    if one.state == "finished" and one.record is None:
        one.record = runs.record(one.flow, one.id)
        one.daemon = one.record.get("daemon")
    return one


def unfinished(runs: RunStore, flow: str, now: datetime, running: Running) -> list[Located]:
    """The runs of `flow` requested (in the last DAYS days), queued or running, oldest first."""
    found = {}
    for base in recent_dirs(now):
        for rid in _request_ids(runs, base, lambda _i: True):
            located = _of_request(runs, rid, running)
            if located is not None and located.flow == flow and located.state in UNFINISHED:
                found[located.id] = located
    for run_id, run in running().items():
        if run["flow"] == flow:
            found[run_id] = Located(run_id, flow, "running", daemon=run["daemon"], since=run["started"])
    return sorted(found.values(), key=lambda c: c.id)
