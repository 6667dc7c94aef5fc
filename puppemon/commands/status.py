"""`puppemon status`: what each daemon reported to the remote (refs/puppemon/status/<name>)."""
from __future__ import annotations

import json
import os
from datetime import datetime, timezone

from puppemon.errors import PuppemonError
from puppemon.gitstore import GitError, RemoteMissingRef, Store
from puppemon.records import RunStore, parse_iso

STATUS_REFS = "refs/puppemon/status/"
FLOWS_TIP = "refs/puppemon/remote-flows"
STALE_AFTER = 180.0  # a daemon heartbeats about once a minute


def fetch_status(store: Store, remote: str, branch: str = "flows") -> None:
    """Mirror the remote's status refs into refs/puppemon/status/* (stale ones removed) and its flows tip.

    Fetched into a scratch namespace first, so a daemon that is gone from the
    remote disappears here too, and a failed fetch leaves the last copy intact.
    """
    scratch = f"refs/puppemon/fetching-{os.getpid()}/"
    specs = [f"+{STATUS_REFS}*:{scratch}status/*", f"+refs/heads/{branch}:{scratch}flows"]
    try:
        try:
            store.fetch(remote, specs, timeout=60)
        except RemoteMissingRef:  # nothing pushed to flows yet
            store.fetch(remote, specs[:1], timeout=60)
        fetched = store.refs(scratch)
        for name in store.refs(STATUS_REFS):
            if f"{scratch}status/{name[len(STATUS_REFS):]}" not in fetched:
                store.delete_ref(name)
        for name, sha in fetched.items():
            rest = name[len(scratch):]
            if rest.startswith("status/"):
                store.force_ref(STATUS_REFS + rest[len("status/"):], sha)
        tip = fetched.get(f"{scratch}flows")
        if tip:
            store.force_ref(FLOWS_TIP, tip)
        else:
            store.delete_ref(FLOWS_TIP)
    finally:
        for name in store.refs(scratch):
            store.delete_ref(name)


def ago(seconds: float) -> str:
    """`12 s ago`, `4 min ago`, `3 h ago`, `2 d ago`."""
    seconds = max(seconds, 0.0)
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 172800:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def collect(store: Store, runs: RunStore, now: datetime) -> tuple[str | None, list[dict]]:
    """(the remote's flows tip, each daemon's status.json with what `status` works out from it)."""
    tip = store.ref(FLOWS_TIP)
    daemons = []
    for name, sha in sorted(store.refs(STATUS_REFS).items()):
        data = store.read(sha, "status.json")
        if data is None:
            continue
        try:
            status = json.loads(data)
        except ValueError:
            continue
        beat = parse_iso(status.get("heartbeat"))
        age = (now - beat).total_seconds() if beat else None
        status["heartbeat_age"] = round(age, 3) if age is not None else None
        status["stale"] = age is None or age > STALE_AFTER
        status["flows_tip"] = tip
        status["up_to_date"] = bool(tip) and status.get("flows_commit") == tip
        flows = status.get("flows") or {}
        for flow, info in flows.items():
            last = runs.latest(flow)
            info["last_run"] = ({"id": last["id"], "status": last.get("status"), "started": last.get("started")}
                                if last else None)
        status["flows"] = flows
        daemons.append(status)
    return tip, daemons


def render(daemon: dict) -> list[str]:
    """Rich-markup lines describing one daemon."""
    from puppemon.commands.runs import STATUS_STYLE, local_time

    age = daemon.get("heartbeat_age")
    beat = ago(age) if age is not None else "never"
    beat = f"[red]{beat}[/]" if daemon.get("stale") else beat
    state = daemon.get("state", "?")
    lines = [f"[bold]{daemon.get('name', '?')}[/] on {daemon.get('host', '?')} (pid {daemon.get('pid', '?')}, "
             f"puppemon {daemon.get('version', '?')}): {state}, heartbeat {beat}"]
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
                style = STATUS_STYLE.get(status)
                last = f"[{style}]{status}[/]{last[len(status):]}" if style else last
            lines.append(f"  {name:<{widths[0]}}   {nxt:<{widths[1]}}   {last}".rstrip())
    in_flight = daemon.get("in_flight") or []
    if not in_flight:
        lines.append("  no runs in flight")
    for run in in_flight:
        lines.append(f"  running: {run.get('flow')} {run.get('run_id')} since {local_time(run.get('started'))}")
    if daemon.get("unpublished"):
        lines.append(f"  [yellow]{daemon['unpublished']} records not yet pushed[/]")
    return lines


def main(as_json: bool = False, remote: str | None = None, fetch: bool = True, directory: str = ".",
         now: datetime | None = None) -> int:
    """Print each daemon's status (or JSON with `as_json`)."""
    from puppemon.commands.runs import open_runs, warn
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
    tip, daemons = collect(store, runs, now or datetime.now(timezone.utc))
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

