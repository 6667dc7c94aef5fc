"""`puppemon runs`: the run history of the remote's `runs` branch, newest first."""
from __future__ import annotations

import json

from puppemon.commands.common import print_table, styled_status, warn
from puppemon.errors import PuppemonError
from puppemon.formats import STATUSES, format_duration, is_flow_name, local_time, parse_moment
from puppemon.history.clone import open_runs
from puppemon.history.records import one_line, trigger_text


def runs_table(records: list[dict]):
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "flow", "status", "trigger", "started", "duration"):
        table.add_column(name, no_wrap=True)
    for r in records:  # text a request carried is shown as text: one line, no rich markup
        table.add_row(r["id"], r["flow"], styled_status(escape(one_line(r.get("status", "?"), 40))),
                      escape(trigger_text(r.get("trigger") or {})), local_time(r.get("started")),
                      format_duration(r.get("duration")))
    return table


def main(flow: str | None = None, status: str | None = None, limit: int = 20, since: str | None = None,
         as_json: bool = False, remote: str | None = None, fetch: bool = True, directory: str = ".",
         until: str | None = None) -> int:
    """Print the newest runs (a table, or a JSON array with `as_json`)."""
    from puppemon.ui import console

    if status is not None and status not in STATUSES:
        raise PuppemonError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    if flow is not None and not is_flow_name(flow):
        raise PuppemonError(f"{flow!r} is not a flow name (lowercase letters, digits, - and _)")
    since_time = parse_moment(since, "--since") if since else None
    until_time = parse_moment(until, "--until") if until else None
    _, runs, _ = open_runs(directory, remote, fetch)
    records = runs.list(flow=flow, status=status, since=since_time, until=until_time, limit=limit)
    if runs.skipped_note():
        warn(runs.skipped_note())
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        filtered = flow or status or since or until
        print("no runs match" if filtered and (runs.tip or runs.archives) else "no runs recorded yet")
        return 0
    print_table(console(), runs_table(records))
    return 0
