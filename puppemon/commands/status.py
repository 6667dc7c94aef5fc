"""`puppemon status`: what each daemon reported to the remote (refs/puppemon/status/<name>)."""
from __future__ import annotations

import json
from datetime import datetime, timezone

from rich.markup import escape

from puppemon.commands.common import styled_status, warn
from puppemon.errors import PuppemonError
from puppemon.formats import format_age, local_time, plural
from puppemon.gitstore import GitError
from puppemon.history.clone import open_runs
from puppemon.history.status import collect, fetch_status


def render(daemon: dict) -> list[str]:
    """Rich-markup lines describing one daemon."""
    age = daemon.get("heartbeat_age")
    beat = format_age(age) if age is not None else "never"
    beat = f"[red]{beat}[/]" if daemon.get("stale") else beat
    state = daemon.get("state", "?")
    name, host, version = (escape(str(daemon.get(k) or "?")) for k in ("name", "host", "version"))
    lines = [f"[bold]{name}[/] on {host} (pid {daemon.get('pid', '?')}, "
             f"puppemon {version}): {escape(str(state))}, heartbeat {beat}"]
    deployed, tip = daemon.get("flows_commit"), daemon.get("flows_tip")
    if not deployed:
        where = "nothing deployed" + (f" (behind: deploying {tip[:7]})" if tip else "")
    elif daemon.get("up_to_date"):
        where = f"deployed {deployed[:7]}: [green]up to date[/]"
    elif tip:
        where = f"deployed {deployed[:7]}: [yellow]behind: deploying {tip[:7]}[/]"
    else:
        where = f"deployed {deployed[:7]}: the remote has no flows branch"
    lines.append(f"  {where}")
    flows = daemon.get("flows") or {}
    if flows:
        rows = [("flow", "next", "last run")]
        for name in sorted(flows):
            info = flows[name]
            last = info.get("last_run")
            rows.append((name, local_time(info.get("next")) if info.get("next") else "-",
                         f"{last['status']} {last['id']}" if last else "-"))
        widths = [max(len(r[i]) for r in rows) for i in range(2)]
        for n, (name, nxt, last) in enumerate(rows):
            if n and last != "-":
                status = last.split()[0]
                last = styled_status(status) + last[len(status):]
            lines.append(f"  {name:<{widths[0]}}   {nxt:<{widths[1]}}   {last}".rstrip())
    in_flight = daemon.get("in_flight") or []
    if not in_flight:
        lines.append("  no runs in flight")
    for run in in_flight:
        lines.append(escape(f"  running: {run.get('flow')} {run.get('run_id')} since {local_time(run.get('started'))}"))
    if daemon.get("unpublished"):
        lines.append(f"  [yellow]{daemon['unpublished']} records not yet pushed[/]")
    return lines


def main(as_json: bool = False, remote: str | None = None, fetch: bool = True, directory: str = ".",
         now: datetime | None = None) -> int:
    """Print each daemon's status (or JSON with `as_json`)."""
    from puppemon.ui import console

    store, runs, remote = open_runs(directory, remote, fetch)
    if remote is None and fetch:
        raise PuppemonError("no remote to read status from; pass --remote NAME|URL, or add one with "
                            "`git remote add origin URL`")
    if fetch:
        try:
            fetch_status(store, remote)
        except GitError as exc:
            warn(f"{exc.message}; showing the status last fetched")
    tip, daemons, unreadable = collect(store, runs, now or datetime.now(timezone.utc))
    if unreadable:
        warn(f"{plural(unreadable, 'status ref')} under refs/puppemon/status/ could not be read (skipped)")
    if as_json:
        print(json.dumps({"remote": remote, "flows_tip": tip, "daemons": daemons}, indent=2))
        return 0
    if not daemons:
        print(f"no daemon has reported to {remote or 'this repository'} yet")
        return 0
    con = console()
    for n, daemon in enumerate(daemons):
        if n:
            con.print()
        for line in render(daemon):
            con.print(line, soft_wrap=True)
    return 0

