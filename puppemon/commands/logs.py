"""`puppemon logs RUN_ID|FLOW`: the log of one run, from the `runs` branch."""
from __future__ import annotations

import sys

from puppemon.commands.common import warn, write_bytes
from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, local_time, reason
from puppemon.history.records import RunStore, one_line, trigger_text


def state_of(history, which: str, fetch: bool | None):
    """The run `which` names, in whatever state it is (history/lookup.py `Located`): the latest recorded
    run of the flow named `which`, else the run whose id is, or uniquely matches, `which`."""
    from puppemon.commands.locating import locate
    from puppemon.history.lookup import Located

    runs = history.runs
    if which in runs.flows():
        record = runs.latest(which)
        if record is not None:
            return Located(record["id"], record["flow"], "finished", record, record.get("daemon"))
    return locate(history, which, fetch)


def _find(history, which: str, fetch: bool | None, last: bool = True):
    """state_of, saying what could not be read (when not found, only on the `last` try: once)."""
    runs = history.runs
    try:
        located = state_of(history, which, fetch)
    except PuppemonError:
        if last and runs.skipped_note():
            warn(runs.skipped_note())
        raise
    if runs.skipped_note():
        warn(runs.skipped_note())
    return located


def locate_fresh(directory: str, which: str, remote: str | None, fetch: bool | None):
    """(the history read, the run `which` names): a fetch made moments ago is reused, unless the run
    asked for is not in it or not finished in it (it may be newer)."""
    from puppemon.commands.reading import open_history
    from puppemon.history.lookup import UNFINISHED

    history = open_history(directory, remote, fetch)
    again = fetch is None and not history.fetched and history.remote is not None
    try:
        located = _find(history, which, fetch, last=not again)
    except PuppemonError:
        if not again:
            raise
        located = None
    if again and (located is None or located.state in UNFINISHED):
        history = open_history(directory, remote, True)
        located = _find(history, which, True)
    return history, located


def _id_and_flow(history, which: str) -> tuple[str, str]:
    """(run id, flow) of the run `which` names, in whatever state (for `logs -f`)."""
    located = _find(history, which, None)
    return located.id, located.flow


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


def json_text(runs: RunStore, record: dict) -> str:
    """`{"run": <run.json>, "log": <the log as text>, "result": <result.json or null>}` (docs/json.md)."""
    import json

    log = (runs.read_file(record, "log.txt") or b"").decode("utf-8", "replace")
    data = runs.read_file(record, "result.json") if record.get("has_result") else None
    try:
        value = json.loads(data) if data is not None else None
    except ValueError:
        value = None
    return json.dumps({"run": record, "log": log, "result": value}, indent=2, ensure_ascii=False)


def unfinished_json(located) -> str:
    """Where a run that has no record yet (or was refused) is, with `run`, `log`, `result` null."""
    import json

    return json.dumps({"id": located.id, "flow": located.flow, "state": located.state, "daemon": located.daemon,
                       "since": located.since, "reason": located.reason, "run": None, "log": None,
                       "result": None}, indent=2, ensure_ascii=False)


def main(which: str, remote: str | None = None, fetch: bool | None = None, result: bool = False,
         outputs: bool = False, directory: str = ".", as_json: bool = False, follow: bool = False,
         http: str | None = None) -> int:
    """Print a header line (stderr) and the run's log as recorded (stdout, byte for byte); of a run not
    finished yet, which state it is in (stderr); with `follow`, its output as it comes (commands/follow.py)."""
    if follow:
        from puppemon.commands.follow import follow_run

        if fetch is False or result or outputs or as_json:
            raise PuppemonError("-f follows a run's log through the remote: it cannot go with " + (
                "--no-fetch" if fetch is False else "--result" if result else "--outputs" if outputs else "--json"))
        return follow_run(which, remote, directory, http, _id_and_flow)
    if http:
        raise PuppemonError("--http is for -f (following a running run)")
    history, located = locate_fresh(directory, which, remote, fetch)
    if as_json and located.state != "finished":
        print(unfinished_json(located))
        return 1 if located.state == "refused" else 0
    if located.state == "refused":
        raise PuppemonError(located.describe())
    if located.state != "finished":
        print(f"{located.describe()}; its log is recorded when it ends (`puppemon logs -f {located.id}` follows it)",
              file=sys.stderr)
        return 0
    record, runs = located.record, history.runs
    if as_json:
        print(json_text(runs, record))
        return 0
    print(header(record), file=sys.stderr)
    if why := reason(str(record.get("status")), record.get("error")):
        print(f"error: {why}", file=sys.stderr)
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
