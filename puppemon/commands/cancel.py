"""`puppemon cancel ID | --flow NAME`: withdraw a run that has not started, or stop a running one, through
cancel requests on the runs branch.

A cancel request names a run id; the daemon that has the run queued or in flight withdraws it (recorded
`cancelled`, "withdrawn before it started": it never starts) or stops it (SIGTERM, grace, SIGKILL), and
marks the request done (`<id>.done.json`). A request not claimed yet is withdrawn by the daemon that
claims it, before it starts it. `--json` prints, per run, {"id", "flow", "action": "withdrawn" or
"stopping", "state" (what it was: requested, queued, running), "daemon", "cancel_request"}, and with
`--wait` "status" and "error" of its record: one object for an ID, an array for `--flow`.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from puppemon.errors import PuppemonError

POLL = 1.0
ACTIONS = {"requested": "withdrawn", "queued": "withdrawn", "running": "stopping"}


class WaitTimeout(PuppemonError):
    exit_code = 2


def main(run_id: str | None = None, flow: str | None = None, wait: bool = False, timeout: str | None = None,
         as_json: bool = False, remote: str | None = None, directory: str = ".") -> int:
    """Write one cancel request per run named, say what each does; with `wait`, wait for their records."""
    from puppemon.commands.reading import forget, open_history
    from puppemon.formats import option_seconds
    from puppemon.history.requests import cancel_request, send
    from puppemon.project.snapshot import user_at_host

    if (run_id is None) == (flow is None):
        raise PuppemonError("give a run id (or a unique part of one) or --flow NAME, one of the two")
    if timeout is not None and not wait:
        raise PuppemonError("--timeout goes with --wait")
    limit = option_seconds(timeout, "--timeout") if timeout is not None else None
    history = open_history(directory, remote, True)
    if history.remote is None:
        raise PuppemonError("no remote to send the cancel to: give --remote NAME|URL (or add an origin)")
    targets = _targets(history, run_id, flow)
    forget(history.store.git_dir)   # the next read here fetches what the cancel leads to
    results = []
    for target in targets:
        body = cancel_request(target.id, user_at_host(), datetime.now(timezone.utc))
        send(history.store, history.remote, body)
        results.append({"id": target.id, "flow": target.flow, "action": ACTIONS[target.state],
                        "state": target.state, "daemon": target.daemon, "cancel_request": body["id"]})
        if not as_json:
            print(_said(results[-1]), flush=True)
    code = _wait(history, results, limit, as_json) if wait else 0
    if as_json:
        print(json.dumps(results if flow is not None else results[0], indent=2, ensure_ascii=False))
    return code


def _targets(history, run_id: str | None, flow: str | None) -> list:
    """The runs to cancel (history/lookup.py `Located`): the one `run_id` names, or those of `flow` that
    are requested, queued or running; an error when there is none to cancel."""
    from puppemon.commands.locating import locate, running
    from puppemon.formats import is_flow_name
    from puppemon.history.lookup import UNFINISHED, unfinished

    if flow is not None:
        if not is_flow_name(flow):
            raise PuppemonError(f"{flow!r} is not a flow name (lowercase letters, digits, - and _)")
        found = unfinished(history.runs, flow, datetime.now(timezone.utc), running(history, True))
        if not found:
            raise PuppemonError(f"no run of {flow} is requested, queued or running: nothing to cancel")
        # the runs not started first: a run stopped first would free its slot for the next one to start
        return sorted(found, key=lambda c: c.state == "running")
    located = locate(history, run_id, True)
    if located.state not in UNFINISHED:
        raise PuppemonError(f"{located.describe()}: nothing to cancel")
    return [located]


def _said(result: dict) -> str:
    if result["action"] == "withdrawn":
        return (f"withdrawn: run {result['id']} ({result['flow']}) was {result['state']} and will not start "
                f"(cancel request {result['cancel_request']})")
    return (f"stopping: run {result['id']} ({result['flow']}) on {result['daemon']} "
            f"(cancel request {result['cancel_request']})")


def _wait(history, results: list[dict], limit: float | None, quiet: bool) -> int:
    """Fetch the runs branch about every second until each run is recorded; 0 when all are `cancelled`."""
    from puppemon.formats import format_duration
    from puppemon.gitstore import GitError
    from puppemon.history.recorder import Recorder
    from puppemon.history.records import find_record

    recorder = Recorder(history.store, remote=history.remote)
    deadline = None if limit is None else time.monotonic() + limit
    waiting = list(results)
    while waiting:
        try:
            tip = recorder.fetch()
        except GitError:
            tip = None
        for result in list(waiting):
            record = find_record(history.store, tip, result["id"], result["flow"]) if tip else None
            if record is not None:
                waiting.remove(result)
                result.update(status=record["status"], error=record.get("error"))
                if not quiet:
                    how = (record["error"] if (record.get("error") or "").startswith("withdrawn")
                           else f"{record['status']} in {format_duration(record.get('duration'))}")
                    print(f"run {result['id']} ({result['flow']}): {how}", flush=True)
        if waiting and deadline is not None and time.monotonic() >= deadline:
            raise WaitTimeout(f"timed out after {limit:g}s waiting for run {waiting[0]['id']} to be recorded; "
                              "the cancel request stays on the runs branch and will still be served")
        if waiting:
            time.sleep(POLL if deadline is None else max(0.0, min(POLL, deadline - time.monotonic())))
    return 0 if all(r["status"] == "cancelled" for r in results) else 1
