"""`puppemon status`: what each daemon reported to the remote (refs/puppemon/status/<name>)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from puppemon.commands.common import styled_status, warn
from puppemon.commands.reading import open_history
from puppemon.errors import PuppemonError
from puppemon.formats import format_age, local_time, plural
from puppemon.history.status import collect
from puppemon.ui import Cell, print_lines


def render(daemon: dict) -> list[list[Cell]]:
    """The lines describing one daemon, as ui.Cells (text the remote holds is never markup)."""
    age = daemon.get("heartbeat_age")
    beat = format_age(age) if age is not None else "never"
    state = daemon.get("state", "?")
    name, host, version = (str(daemon.get(k) or "?") for k in ("name", "host", "version"))
    lines: list[list[Cell]] = [[(name, "bold"), f" on {host} (pid {daemon.get('pid', '?')}, "
                                f"puppemon {version}): {state}, heartbeat ",
                                (beat, "red" if daemon.get("stale") else None)]]
    deployed, tip = daemon.get("flows_commit"), daemon.get("flows_tip")
    if not deployed:
        where: list[Cell] = ["nothing deployed" + (f" (behind: deploying {tip[:7]})" if tip else "")]
    elif daemon.get("up_to_date"):
        where = [f"deployed {deployed[:7]}: ", ("up to date", "green")]
    elif tip:
        where = [f"deployed {deployed[:7]}: ", (f"behind: deploying {tip[:7]}", "yellow")]
    else:
        where = [f"deployed {deployed[:7]}: the remote has no flows branch"]
    lines.append(["  ", *where])
    lines += _flow_lines(daemon.get("flows") or {})
    in_flight = daemon.get("in_flight") or []
    if not in_flight:
        lines.append(["  no runs in flight"])
    for run in in_flight:
        lines.append([f"  running: {run.get('flow')} {run.get('run_id')} since {local_time(run.get('started'))}"
                      + (" (paused)" if run.get("paused") is True else "")])
    if daemon.get("unpublished"):
        lines.append(["  ", (f"{daemon['unpublished']} records not yet pushed", "yellow")])
    return lines


def _flow_lines(flows: dict) -> list[list[Cell]]:
    """`  flow   next   last run` and a line per flow, the columns as wide as their longest value."""
    if not flows:
        return []
    rows = [("flow", "next", "last run")]
    for name in sorted(flows):
        info = flows[name]
        last = info.get("last_run")
        rows.append((name, "paused" if info.get("paused") else local_time(info.get("next")) if info.get("next") else "-",
                     f"{last['status']} {last['id']}" if last else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(2)]
    lines: list[list[Cell]] = []
    for n, (name, nxt, last) in enumerate(rows):
        head = f"  {name:<{widths[0]}}   {nxt:<{widths[1]}}   "
        if n and last != "-":
            status = last.split()[0]
            lines.append([head, styled_status(status), last[len(status):]])
        else:
            lines.append([(head + last).rstrip()])
    return lines


def main(as_json: bool = False, remote: str | None = None, fetch: bool | None = None, directory: str = ".",
         now: datetime | None = None) -> int:
    """Print each daemon's status (or JSON with `as_json`); `fetch` as reading.open_history."""
    history = open_history(directory, remote, fetch, status=True)
    store, runs, remote = history.store, history.runs, history.remote
    if remote is None and fetch is not False:
        raise PuppemonError("no remote to read status from; pass --remote NAME|URL, or add one with "
                            "`git remote add origin URL`")
    tip, daemons, unreadable = collect(store, runs, now or datetime.now(timezone.utc))
    if unreadable:
        warn(f"{plural(unreadable, 'status ref')} under refs/puppemon/status/ could not be read (skipped)")
    from puppemon.history.control import describe, paused, read_states

    held = paused(read_states(store, store.ref("refs/heads/runs")))   # control/ on the runs branch
    if as_json:
        print(json.dumps({"remote": remote, "flows_tip": tip, "daemons": daemons, "paused": held}, indent=2))
        return 0
    if not daemons:
        print(f"no daemon has reported to {remote or 'this repository'} yet")
    lines: list[list[Cell]] = []
    for n, daemon in enumerate(daemons):
        for name in held:
            if name in (daemon.get("flows") or {}):
                daemon["flows"][name]["next"] = None
                daemon["flows"][name]["paused"] = True
        lines += ([[""]] if n else []) + render(daemon)
    if held:
        lines += [[""]] + [[f"{name}: ", (describe(state), "yellow")] for name, state in sorted(held.items())]
    print_lines(lines)
    return 0
