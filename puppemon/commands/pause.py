"""`puppemon pause` and `puppemon resume`: a flow's control state on the runs branch, or a run in flight.

`pause FLOW` / `resume FLOW` (or `--all`) commit control/flows/<flow>.json on the runs branch
(history/control.py), which every daemon reads each cycle. `--run ID` writes a pause or resume
request instead, which the daemon that has the run acts on (daemon/request_server.py).

`--json` prints one object:
    {"action": "pause"|"resume", "written": [state, ...], "unchanged": [{"flow", "state"}, ...]}
where a state is control/flows/<flow>.json (schema, flow, paused, by, time, reason[, catch_up]);
with --run: {"action": "pause"|"resume", "run_id": ID, "request": REQUEST_ID}.
"""
from __future__ import annotations

import json
from datetime import datetime, timezone

from puppemon.errors import PuppemonError


def main(flow: str | None = None, all_flows: bool = False, run_id: str | None = None, as_json: bool = False,
         remote: str | None = None, directory: str = ".", reason: str | None = None, catch_up: bool = False,
         resume: bool = False) -> int:
    """Pause (or, with `resume`, resume) a flow, every flow, or a run in flight."""
    from puppemon.commands.reading import forget
    from puppemon.gitstore import Store
    from puppemon.gitstore.transport import resolve_remote

    verb = "resume" if resume else "pause"
    if run_id is not None and (flow or all_flows):
        raise PuppemonError(f"`puppemon {verb} --run RUN_ID` takes no FLOW nor --all")
    if run_id is None and bool(flow) == all_flows:
        raise PuppemonError(f"name a flow (`puppemon {verb} FLOW`), pass --all, or --run RUN_ID for a run in flight")
    if run_id is not None and catch_up:
        raise PuppemonError("--catch-up is for flows: a run in flight just goes on")
    store = Store.discover(directory)
    remote = resolve_remote(store, remote)
    forget(store.git_dir)   # the next read here fetches what this leads to
    if run_id is not None:
        return _run(store, remote, run_id, verb, as_json, directory)
    targets = _targets(store, remote, flow)
    return _flows(store, remote, targets, not resume, reason, catch_up, as_json)


def _targets(store, remote: str, flow: str | None) -> list[str]:
    """The flow named (checked against the deployed flows), or every deployed flow."""
    from puppemon.commands.common import fetch_deployed
    from puppemon.formats import is_flow_name
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, parse

    if flow is not None and not is_flow_name(flow):
        raise PuppemonError(f"{flow!r} is not a flow name (lower-case letters, digits, '-' and '_')")
    tip, data = fetch_deployed(store, remote)
    if tip is None:
        raise PuppemonError(f"nothing is deployed on {remote} yet: run `puppemon push` first")
    try:
        flows = list(parse(data or b"", MANIFEST_NAME).flows)
    except ManifestError:
        if flow is None:
            raise PuppemonError(f"the deployed flows commit {tip[:7]} has no valid {MANIFEST_NAME}: name the "
                                f"flows one by one") from None
        return [flow]   # a deploy the daemons refused: the state is there for the next one
    if flow is None:
        if not flows:
            raise PuppemonError(f"the deployed flows commit {tip[:7]} has no flows")
        return flows
    if flow not in flows:
        from puppemon.formats import did_you_mean

        close = did_you_mean(flow, flows)
        raise PuppemonError(f"no flow {flow!r} in the deployed flows (flows {tip[:7]} on {remote}: "
                            f"{', '.join(flows) or 'none'})" + (f"; {close}" if close else ""))
    return [flow]


def _flows(store, remote: str, targets: list[str], pause: bool, reason: str | None, catch_up: bool,
           as_json: bool) -> int:
    from puppemon.history.control import describe, flow_state, write
    from puppemon.project.snapshot import user_at_host

    by, now = user_at_host(), datetime.now(timezone.utc)
    unchanged: list[tuple[str, dict | None]] = []

    def change(current: dict[str, dict]) -> list[dict]:
        unchanged.clear()
        states = []
        for name in targets:
            state = current.get(name)
            if bool(state and state["paused"]) == pause:
                unchanged.append((name, state))
            else:
                states.append(flow_state(name, pause, by, now, reason, catch_up))
        return states

    written = write(store, remote, change)
    if as_json:
        print(json.dumps({"action": "pause" if pause else "resume", "written": written,
                          "unchanged": [{"flow": n, "state": s} for n, s in unchanged]}, indent=2))
        return 0
    for name, state in unchanged:
        print(f"{name} is already {describe(state, now)}" if pause else f"{name} is not paused")
    if written:
        names = ", ".join(s["flow"] for s in written)
        if pause:
            print(f"paused {names}: no scheduled or requested run starts until `puppemon resume`")
        elif catch_up:
            print(f"resumed {names}: one run for the fires missed while paused, if any")
        else:
            print(f"resumed {names}: fires missed while paused are not run (--catch-up runs one)")
    return 0


def _run(store, remote: str, which: str, verb: str, as_json: bool, directory: str) -> int:
    """Ask the daemon that has the run `which` names (an id or a unique prefix of one, queued or in flight)
    to freeze it or let it go on; a request for an id no daemon shows yet waits for its run."""
    from puppemon.history.requests import cancel_request, send
    from puppemon.project.snapshot import user_at_host

    run_id = _unfinished(which, remote, verb, directory)
    body = cancel_request(run_id, user_at_host(), datetime.now(timezone.utc), kind=verb)
    send(store, remote, body)
    if as_json:
        print(json.dumps({"action": verb, "run_id": run_id, "request": body["id"]}, indent=2))
    else:
        print(body["id"])
    return 0


def _unfinished(which: str, remote: str, verb: str, directory: str) -> str:
    """The id of the run queued or in flight `which` names; a whole id nothing shows yet is taken as it is
    (the daemon acts on the request once the run is there)."""
    from puppemon.commands.locating import locate
    from puppemon.commands.reading import open_history

    located = locate(open_history(directory, remote, True), which, True, unseen=True)
    if located.state not in ("queued", "running", "unseen"):
        raise PuppemonError(f"{located.describe()}: only a run queued or in flight can be {verb}d")
    return located.id
