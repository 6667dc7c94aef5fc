"""`puppemon status`: what each daemon reported to the remote (refs/puppemon/status/<name>)."""
from __future__ import annotations

import json
import sys
from datetime import datetime, timezone

from puppemon.commands.common import styled_status, warn
from puppemon.commands.reading import open_history
from puppemon.errors import PuppemonError
from puppemon.formats import format_age, format_interval, local_time, plural
from puppemon.history.status import collect, is_live, labels_of, next_due, runs_on_of, unplaced
from puppemon.ui import Cell, Column, print_lines, table_lines, terminal_width

# A daemon's flows on a narrow terminal: the daemons that can take it go first (shown only where labels
# or several live daemons make it news), then the last run's id, its status, the next fire time; the
# flow's name stays.
FLOW_COLUMNS = (Column("flow"), Column("next", drop=1), Column("last run", drop=2), Column("", drop=3))
ON_COLUMN = Column("on", drop=4)


def _state(daemon: dict) -> list[Cell]:
    """`running, heartbeat 12 s ago`, `stopped, last heartbeat ...`, `gone (was running), last ...`."""
    age = daemon.get("heartbeat_age")
    beat: Cell = (format_age(age) if age is not None else "never", "red" if daemon.get("stale") else None)
    state = str(daemon.get("state") or "?")
    if daemon.get("once") and state == "stopped":
        state = "ran once"
    if daemon.get("gone"):
        return [("gone", "red"), f" (was {state}), last heartbeat ", beat]
    return [state, ", heartbeat " if state == "running" else ", last heartbeat ", beat]


def _deployed(daemon: dict) -> list[Cell]:
    deployed, tip = daemon.get("flows_commit"), daemon.get("flows_tip")
    live = daemon.get("state") == "running" and not daemon.get("gone")
    if not deployed:
        return ["nothing deployed" + (f" (behind: deploying {tip[:7]})" if tip and live else "")]
    if daemon.get("up_to_date"):
        return [f"deployed {deployed[:7]}: ", ("up to date", "green")]
    if tip and live:
        return [f"deployed {deployed[:7]}: ", (f"behind: deploying {tip[:7]}", "yellow")]
    if tip:   # not running: it deploys nothing until it starts again
        return [f"deployed {deployed[:7]}; the remote has {tip[:7]} now"]
    return [f"deployed {deployed[:7]}: the remote has no flows branch"]


def render(daemon: dict, limit: int | None = None, show_on: bool = False) -> list[list[Cell]]:
    """The lines describing one daemon, as ui.Cells (text the remote holds is never markup), fitted to
    `limit` cells where they can be; `show_on`: which live daemons can take each flow."""
    name, host, version = (str(daemon.get(k) or "?") for k in ("name", "host", "version"))
    lines: list[list[Cell]] = [[(name, "bold"), ": ", *_state(daemon)],
                               [f"  on {host}, pid {daemon.get('pid', '?')}, puppemon {version}"],
                               ["  ", *_deployed(daemon)]]
    due = next_due(daemon) if daemon.get("once") else None
    if due:
        lines.append([f"  next start due: {due[1]} at {local_time(due[0], True)}"])
    labels = labels_of(daemon)
    if labels:
        lines.append([f"  labels {', '.join(labels)}"])
    lines += _flow_lines(daemon.get("flows") or {}, limit, show_on)
    in_flight = daemon.get("in_flight") or []
    if not in_flight:
        lines.append(["  no runs in flight"])
    for run in in_flight:
        head, since = f"  running: {run.get('flow')} {run.get('run_id')}", f"since {local_time(run.get('started'), True)}"
        since += " (paused)" if run.get("paused") is True else ""
        fits = limit is None or len(head) + 1 + len(since) <= limit
        lines += [[f"{head} {since}"]] if fits else [[head], [f"    {since}"]]
    if daemon.get("unpublished"):
        lines.append(["  ", (f"{daemon['unpublished']} records not yet pushed", "yellow")])
    return lines


def _flow_lines(flows: dict, limit: int | None, show_on: bool = False) -> list[list[Cell]]:
    """`  flow   next   last run   on` and a line per flow, as a table without a rule."""
    if not flows:
        return []
    rows = []
    for name in sorted(flows):
        info = flows[name]
        last = info.get("last_run")
        nxt = "paused" if info.get("paused") else local_time(info.get("next"), True) if info.get("next") else "-"
        if info.get("taken_here") is False and not info.get("paused"):
            nxt = "not here"
        rows.append([name, nxt,
                     styled_status(str(last["status"])) if last else "-", str(last["id"]) if last else ""])
        if show_on:
            rows[-1].append(", ".join(info.get("on") or []) or ("none", "red"))
    columns = FLOW_COLUMNS + (ON_COLUMN,) if show_on else FLOW_COLUMNS
    return table_lines(columns, rows, None if limit is None else limit - 2, rule=False, indent="  ")


def placement_news(daemons: list[dict]) -> bool:
    """Whether which daemons can take a flow is worth a column: more than one live daemon, or a flow
    that asks for labels."""
    return sum(map(is_live, daemons)) > 1 or any(runs_on_of(info) for d in daemons
                                                 for info in (d.get("flows") or {}).values())


def _prune(history, daemons: list[dict]) -> int:
    from puppemon.history.status import prune_gone

    gone = [d for d in daemons if d.get("gone")]
    if not gone:
        print("no daemon is gone")
        return 0
    for ref in prune_gone(history.store, history.remote, [d["ref"] for d in gone]):
        print(f"removed {ref} from {history.remote}")
    return 0


def main(as_json: bool = False, remote: str | None = None, fetch: bool | None = None, directory: str = ".",
         now: datetime | None = None, prune_gone: bool = False) -> int:
    """Print each daemon's status (or JSON with `as_json`); `fetch` as reading.open_history. With
    `prune_gone`, remove the status refs of the daemons that are gone instead."""
    history = open_history(directory, remote, True if prune_gone else fetch, status=True)
    store, runs, remote = history.store, history.runs, history.remote
    if remote is None and (fetch is not False or prune_gone):
        raise PuppemonError("no remote to read status from; pass --remote NAME|URL, or add one with "
                            "`git remote add origin URL`")
    if prune_gone and not history.fetched:
        raise PuppemonError(f"could not fetch the status refs of {remote}; nothing pruned")
    tip, daemons, unreadable = collect(store, runs, now or datetime.now(timezone.utc))
    if unreadable:
        warn(f"{plural(unreadable, 'status ref')} under refs/puppemon/status/ could not be read (skipped)")
    if prune_gone:
        return _prune(history, daemons)
    from puppemon.history.control import describe, paused, read_states

    held = paused(read_states(store, store.ref("refs/heads/runs")))   # control/ on the runs branch
    homeless = unplaced(daemons)
    if as_json:
        print(json.dumps({"remote": remote, "flows_tip": tip, "daemons": daemons, "paused": held,
                          "unplaced": [{"flow": f, "runs_on": list(r)} for f, r in homeless.items()]}, indent=2))
        return 0
    if not daemons:
        print(f"no daemon has reported to {remote or 'this repository'} yet")
    limit = terminal_width(sys.stdout)
    lines: list[list[Cell]] = []
    show_on = placement_news(daemons)
    for n, daemon in enumerate(daemons):
        for name in held:
            if name in (daemon.get("flows") or {}):
                daemon["flows"][name]["next"] = None
                daemon["flows"][name]["paused"] = True
        lines += ([[""]] if n else []) + render(daemon, limit, show_on)
    gone = [d for d in daemons if d.get("gone")]
    if gone:
        bound = format_interval(min(d["gone_after"] for d in gone))
        lines += [[""], [f"{plural(len(gone), 'daemon')} gone (no heartbeat for {bound} or more)"],
                  ["remove with `puppemon status --prune-gone`"]]
    if homeless:
        lines += [[""]] + [[f"{name}: ", (f"needs labels {', '.join(runs_on)}: no live daemon has them", "red")]
                           for name, runs_on in homeless.items()]
    if held:
        lines += [[""]] + [[f"{name}: ", (describe(state), "yellow")] for name, state in sorted(held.items())]
    print_lines(lines)
    return 0
