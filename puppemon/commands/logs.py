"""`puppemon logs RUN_ID|FLOW`: the log of one run, from the `runs` branch."""
from __future__ import annotations

import sys

from puppemon.commands.common import warn, write_bytes
from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, local_time
from puppemon.history.records import RunStore, one_line, trigger_text


def find_run(runs: RunStore, which: str) -> dict:
    """The latest run of the flow named `which`, else the run whose id is or starts with `which`."""
    if which in runs.flows():
        record = runs.latest(which)
        if record is not None:
            return record
    return runs.find(which)


def _find(runs: RunStore, which: str, last: bool = True) -> dict:
    """find_run, saying what could not be read (when not found, only on the `last` try: once)."""
    try:
        if not runs.tip:
            raise PuppemonError("no runs recorded yet")
        record = find_run(runs, which)
    except PuppemonError:
        if last and runs.skipped_note():
            warn(runs.skipped_note())
        raise
    if runs.skipped_note():
        warn(runs.skipped_note())
    return record


def header(record: dict) -> str:
    """`hello 20261125T083000Z-7f3a9c succeeded (schedule) started 2026-11-25 16:30:00 CST, 0.4s, flows 1a2b3c4`."""
    line = (f"{record['flow']} {record['id']} {one_line(record.get('status', '?'), 40)} "
            f"({trigger_text(record.get('trigger') or {})}) started {local_time(record.get('started'), True)}, "
            f"{format_duration(record.get('duration'))}")
    if record.get("flows_commit"):
        line += f", flows {record['flows_commit'][:7]}"
    elif record.get("source_commit"):
        line += f", source {record['source_commit'][:7]}"
    if record.get("daemon"):
        line += f", on {one_line(record['daemon'], 100)}"
    return line


def main(which: str, remote: str | None = None, fetch: bool | None = None, result: bool = False,
         outputs: bool = False, directory: str = ".", follow: bool = False, http: str | None = None) -> int:
    """Print a header line (stderr) and the run's log as recorded (stdout, byte for byte)."""
    from puppemon.commands.reading import open_history

    if follow:
        from puppemon.commands.follow import follow_run

        if fetch is False or result or outputs:
            raise PuppemonError("-f follows a run's log through the remote: it cannot go with "
                                f"{'--no-fetch' if fetch is False else '--result' if result else '--outputs'}")
        return follow_run(which, remote, directory, http, _find)
    if http:
        raise PuppemonError("--http is for -f (following a running run)")
    history = open_history(directory, remote, fetch)
    again = fetch is None and not history.fetched and history.remote is not None
    try:
        record = _find(history.runs, which, last=not again)
    except PuppemonError:
        if not again:
            raise
        # a fetch made moments ago was reused, and the run asked for is not in it: it may be newer
        history = open_history(directory, remote, True)
        record = _find(history.runs, which)
    runs = history.runs
    print(header(record), file=sys.stderr)
    if record.get("error") and record.get("status") != "succeeded":
        print(f"error: {record['error']}", file=sys.stderr)
    if result:
        data = runs.read_file(record, "result.json")
        if data is None:
            raise PuppemonError(f"run {record['id']} returned no result")
        write_bytes(data)
    elif outputs:
        for out in record.get("outputs") or []:
            print(f"{out['size']:>10}  {out['path']}")
        if record.get("outputs_note"):
            print(f"note: {record['outputs_note']}", file=sys.stderr)
    else:
        write_bytes(runs.read_file(record, "log.txt") or b"")
    return 0

