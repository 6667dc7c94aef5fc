"""`puppemon runs`: the run history of the remote's `runs` branch, newest first."""
from __future__ import annotations

import json
import re

from puppemon.commands.common import styled_status, warn
from puppemon.commands.reading import open_history
from puppemon.errors import PuppemonError
from puppemon.formats import STATUSES, format_duration, is_flow_name, parse_iso, parse_moment
from puppemon.history.records import one_line, trigger_text
from puppemon.ui import Column, print_table

# What a narrow terminal gives up first: the trigger, then the start time (the id holds it, in UTC),
# then the duration. The id, flow and status always stay, whole.
COLUMNS = (Column("id"), Column("flow"), Column("status"), Column("trigger", drop=3, wrap=True, least=16),
           Column("started", drop=2), Column("duration", drop=1))


def started_text(text: str | None) -> str:
    """`2026-11-25 16:30 CST`: local time with its zone; the seconds are in the id (UTC)."""
    try:
        moment = parse_iso(text)
    except (TypeError, ValueError):   # a record anyone could push
        moment = None
    return moment.astimezone().strftime("%Y-%m-%d %H:%M %Z") if moment else "-"


def runs_rows(records: list[dict]) -> list[list]:
    """One row of ui.Cells per record; text a request carried stays text, on one line."""
    return [[r["id"], r["flow"], styled_status(one_line(r.get("status", "?"), 40)),
             trigger_text(r.get("trigger") or {}), started_text(r.get("started")),
             format_duration(r.get("duration"))] for r in records]


def one_run(history, which: str, fetch: bool | None) -> dict:
    """run.json of the run `which` names; of a run not finished, {id, flow, status: its state, daemon, since}."""
    from puppemon.commands.locating import locate

    located = locate(history, which, fetch)
    if located.record is not None:
        return located.record
    return {"id": located.id, "flow": located.flow, "status": located.state, "trigger": {},
            "daemon": located.daemon, "since": located.since, "started": None, "duration": None}


def main(flow: str | None = None, status: str | None = None, limit: int = 20, since: str | None = None,
         as_json: bool = False, remote: str | None = None, fetch: bool | None = None, directory: str = ".",
         until: str | None = None) -> int:
    """Print the newest runs (a table, or a JSON array with `as_json`); `fetch` as reading.open_history."""
    if status is not None and status not in STATUSES:
        raise PuppemonError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    since_time = parse_moment(since, "--since") if since else None
    until_time = parse_moment(until, "--until") if until else None
    history = open_history(directory, remote, fetch)
    runs = history.runs
    if flow is not None and flow not in runs.flows() and re.match(r"[0-9]{4}|[0-9A-Za-z-]*[TZ]", flow):
        records, flow = [one_run(history, flow, fetch)], None  # an id or prefix: that run, whatever its state
    elif flow is not None and not is_flow_name(flow):
        raise PuppemonError(f"{flow!r} is not a flow name (lowercase letters, digits, - and _)")
    else:
        records = runs.list(flow=flow, status=status, since=since_time, until=until_time, limit=limit)
    if runs.skipped_note():
        warn(runs.skipped_note())
    unrecorded = not records and flow is not None and flow not in runs.flows()
    if unrecorded:  # a misspelled name is an error, not an empty list
        from puppemon.commands.flownames import check_known

        check_known(flow, runs.flows(), history.store, history.remote, directory, fetch)
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        if unrecorded:
            print(f"no runs of {flow} yet")
            return 0
        filtered = flow or status or since or until
        print("no runs match" if filtered and (runs.tip or runs.archives) else "no runs recorded yet")
        return 0
    print_table(COLUMNS, runs_rows(records))
    return 0
