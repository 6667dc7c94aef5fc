"""Control state on the runs branch: which flows are paused, by whom and why (`pause`, `resume`).

    control/flows/<flow>.json   schema 1: flow, paused, by, time, reason, catch_up (on a resume)

The state is a file per flow, overwritten on each change (one commit each; `--all` one commit
for every flow), so `git log runs -- control/` is who paused what and why. Rotation and
retention move only dated records (runs/, requests/, deploys/, claims/): control/ stays on the
tip for good. Clients write it through the Recorder as they write requests; every daemon reads
it from its runs tip each cycle (daemon/control.py), `status` and `upcoming` show it.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Callable

from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, is_flow_name, local_time, parse_iso, utc_iso
from puppemon.history.records import dump_json, one_line
from puppemon.history.requests import PATIENCE

SCHEMA = 1
BASE = "control/flows"
MAX_SIZE = 16 * 1024
MAX_REASON = 500


def path(flow: str) -> str:
    return f"{BASE}/{flow}.json"


def flow_state(flow: str, paused: bool, by: str, now: datetime, reason: str | None = None,
               catch_up: bool = False) -> dict:
    state = {"schema": SCHEMA, "flow": flow, "paused": paused, "by": by, "time": utc_iso(now),
             "reason": one_line(reason, MAX_REASON) if reason else None}
    if not paused:
        state["catch_up"] = catch_up
    return state


def check_state(data: bytes, flow: str) -> dict | None:
    """The state read from `control/flows/<flow>.json`; None when it does not read as one (anyone who
    can push may write it: a file that is not one counts as no file)."""
    if len(data) > MAX_SIZE:
        return None
    try:
        state = json.loads(data.decode("utf-8"))
    except (ValueError, RecursionError):
        return None
    if not (isinstance(state, dict) and state.get("schema") == SCHEMA and state.get("flow") == flow
            and isinstance(state.get("paused"), bool)):
        return None
    try:
        parse_iso(state.get("time") if isinstance(state.get("time"), str) else None)
    except ValueError:
        return None
    for key in ("by", "reason", "time"):
        if state.get(key) is not None and not isinstance(state[key], str):
            return None
    return state


def control_tree(store, tip: str | None) -> str | None:
    """The oid of the `control` tree at `tip` (None: there is none): when it did not change, nothing did."""
    entry = store.lookup(tip, "control") if tip else None
    return entry.oid if entry is not None and entry.is_tree else None


def read_states(store, tip: str | None) -> dict[str, dict]:
    """Each flow's state at `tip`, by flow name (flows with no readable file are not listed)."""
    entry = store.lookup(tip, BASE) if tip else None
    if entry is None or not entry.is_tree:
        return {}
    states = {}
    for item in store.listdir(entry.oid):
        flow = item.name.removesuffix(".json")
        if item.is_tree or not item.name.endswith(".json") or not is_flow_name(flow):
            continue
        if store.size(item.oid, item.mode) > MAX_SIZE:
            continue
        state = check_state(store.data(item.oid), flow)
        if state is not None:
            states[flow] = state
    return states


def paused(states: dict[str, dict]) -> dict[str, dict]:
    return {flow: state for flow, state in states.items() if state["paused"]}


def describe(state: dict, now: datetime | None = None) -> str:
    """`paused (disk full) by ana@box since 2026-11-25 16:30 CST`, for people."""
    reason = f" ({one_line(state['reason'], 200)})" if state.get("reason") else ""
    by = f" by {one_line(state['by'], 100)}" if state.get("by") else ""
    since = ""
    if state.get("time"):
        since = f" since {local_time(state['time'], with_zone=True)}"
        if now is not None:
            since += f" ({format_duration((now - parse_iso(state['time'])).total_seconds())} ago)"
    return f"paused{reason}{by}{since}"


def message(states: list[dict]) -> str:
    """`pause hello: disk full (by ana@box)`, `resume 3 flows with catch-up (by ana@box)`."""
    first = states[0]
    verb = "pause" if first["paused"] else "resume"
    what = first["flow"] if len(states) == 1 else f"{len(states)} flows"
    tail = f": {one_line(first['reason'], 200)}" if first["paused"] and first.get("reason") else ""
    if not first["paused"] and first.get("catch_up"):
        tail = " with catch-up"
    lines = [f"Puppemon-Control: {verb}"] + [f"Puppemon-Flow: {s['flow']}" for s in states]
    return f"{verb} {what}{tail} (by {one_line(first['by'], 100)})\n\n" + "\n".join(lines) + "\n"


def write(store, remote: str, change: Callable[[dict[str, dict]], list[dict]], branch: str = "runs",
          patience: float = PATIENCE) -> list[dict]:
    """Commit the states `change(current states)` returns on the runs branch and push them; what
    was written ([] when `change` had nothing to write). The remote's tip is read first, under
    the writer lock, so `change` sees the state every daemon sees."""
    from puppemon.gitstore import GitError
    from puppemon.history.layout import check as check_layout
    from puppemon.history.recorder import Recorder, writer_lock
    from puppemon.project.snapshot import user_at_host

    recorder = Recorder(store, remote=remote, branch=branch, author_name=user_at_host())
    with writer_lock(store, patience):
        recorder.sync(push=False, patience=patience)
        check_layout(store, store.ref(recorder.tracking), f"runs on {remote}")
        states = change(read_states(store, store.ref(recorder.ref)))
        if not states:
            return []
        recorder.add({path(s["flow"]): dump_json(s) for s in states}, message(states))
        try:
            recorder.sync(push=True, patience=patience)
        except GitError as exc:
            raise PuppemonError(f"{exc.message}\nthe change is committed on the local {branch} branch "
                                f"and will go out with the next pause, resume, trigger or cancel") from None
        if recorder.dropped:
            raise PuppemonError("someone changed the same flows' state at the same moment, and theirs "
                                "won: see `puppemon status`, and run the command again if needed")
    return states
