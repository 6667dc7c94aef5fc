"""`puppemon runs`: the run history of the remote's `runs` branch, newest first."""
from __future__ import annotations

import json
import re
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from puppemon.errors import PuppemonError
from puppemon.gitstore import GitError, Store
from puppemon.records import STATUSES, RunStore, format_seconds, parse_iso, trigger_text

STATUS_STYLE = {"succeeded": "green", "failed": "red", "crashed": "red", "timed_out": "red",
                "cancelled": "yellow", "skipped": "yellow"}


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def open_runs(directory: str | Path, remote: str | None, fetch: bool = True,
              branch: str = "runs") -> tuple[Store, RunStore, str | None]:
    """The project's repository and its `runs` branch, first brought up to date with the remote's.

    The remote's records land in the local `runs` branch (so `git log runs` shows
    them); local records not yet published stay on top. An unreachable remote is
    a warning: the local records are still shown. Returns the remote used (None
    when the repository has none).
    """
    from puppemon.recorder import Recorder
    from puppemon.snapshot import resolve_remote

    store = Store.discover(directory)
    try:
        remote = resolve_remote(store, remote)
    except PuppemonError:
        remote = None  # no remote configured: local records only
    if fetch and remote is not None:
        try:
            Recorder(store, remote=remote, branch=branch).sync(push=False)
        except GitError as exc:
            warn(f"{exc.message}; showing local records")
    return store, RunStore(store, f"refs/heads/{branch}"), remote


def local_time(text: str | None, with_zone: bool = False) -> str:
    """A record's UTC time as local wall-clock time, `2026-11-25 16:30:00` (`... CST` with the zone)."""
    moment = parse_iso(text)
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S" + (" %Z" if with_zone else ""))


def parse_since(text: str, now: Callable[[], datetime] = lambda: datetime.now(timezone.utc)) -> datetime:
    """`2h`, `3d` (that long ago), or a date/time `2026-11-25`, `2026-11-25T08:00` (local unless it names a zone)."""
    from puppemon.manifest import parse_duration

    if not re.match(r"^\d{4}-\d{2}-\d{2}", text.strip()):
        try:
            return now() - timedelta(seconds=parse_duration(text))
        except (ValueError, PuppemonError):
            pass
    else:
        try:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return moment if moment.tzinfo else moment.astimezone()  # naive: local time
    raise PuppemonError(f"--since {text!r}: expected a duration (30m, 2h, 7d) or a date "
                        f"(2026-11-25, 2026-11-25T08:00)")


def print_table(console, table) -> None:
    """Print a rich table without the trailing spaces rich pads its last column with."""
    with console.capture() as capture:
        console.print(table)
    lines = capture.get().splitlines()
    console.file.write("".join(line.rstrip() + "\n" for line in lines))
    console.file.flush()


def runs_table(records: list[dict]):
    from rich import box
    from rich.table import Table

    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for name in ("id", "flow", "status", "trigger", "started", "duration"):
        table.add_column(name, no_wrap=True)
    for r in records:
        status = r.get("status", "?")
        style = STATUS_STYLE.get(status)
        table.add_row(r["id"], r["flow"], f"[{style}]{status}[/]" if style else status,
                      trigger_text(r.get("trigger") or {}), local_time(r.get("started")),
                      format_seconds(r.get("duration")))
    return table


def main(flow: str | None = None, status: str | None = None, limit: int = 20, since: str | None = None,
         as_json: bool = False, remote: str | None = None, fetch: bool = True, directory: str = ".") -> int:
    """Print the newest runs (a table, or a JSON array with `as_json`)."""
    from puppemon.ui import console

    if status is not None and status not in STATUSES:
        raise PuppemonError(f"--status {status!r}: expected one of {', '.join(STATUSES)}")
    since_time = parse_since(since) if since else None
    _, runs, _ = open_runs(directory, remote, fetch)
    records = runs.list(flow=flow, status=status, since=since_time, limit=limit)
    if as_json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
        return 0
    if not records:
        filtered = flow or status or since
        print("no runs match" if filtered and runs.tip else "no runs recorded yet")
        return 0
    print_table(console(), runs_table(records))
    return 0


# -- `puppemon run --record` -------------------------------------------------------

class RecordTarget:
    """Where `puppemon run --record` puts its record: the project's local `runs` branch, then the remote."""

    def __init__(self, store: Store, remote: str | None, push: bool, branch: str = "runs") -> None:
        from puppemon.recorder import Recorder

        self.store, self.remote, self.push, self.branch = store, remote, push, branch
        self.recorder = Recorder(store, remote=remote, branch=branch)

    def record(self, result) -> str:
        """Commit `result` as a manual run and publish it; return the line saying where it went."""
        from puppemon.records import run_files, run_message, run_record
        from puppemon.snapshot import _user, source_info

        _, head = source_info(self.store)
        # Not a deployed flows commit: the code was the working tree as it was, on top of HEAD.
        trigger = {"kind": "manual", "by": _user(), "code": "working tree"}
        rec = run_record(result, trigger=trigger, flows_commit="", source_commit=head or "")
        self.recorder.add(run_files(rec, result.log, result.result, result.has_result, result.outputs),
                          run_message(rec))
        where = f"recorded run {rec['id']} on {self.branch}"
        if self.remote is None:
            return f"{where} (not pushed: the repository has no remote; pass --remote NAME|URL)"
        if not self.push:
            return f"{where} (not pushed: --no-push; it goes out with the next publish)"
        try:
            self.recorder.sync(push=True)
        except GitError as exc:
            return f"{where} (not pushed: {exc.message}; it goes out with the next publish)"
        return f"{where} (pushed to {self.remote})"


def open_target(directory: str | Path, remote: str | None, push: bool) -> RecordTarget:
    """The RecordTarget for the project at `directory` (remote resolved as `puppemon push` does)."""
    from puppemon.snapshot import resolve_remote

    store = Store.discover(directory)
    try:
        remote = resolve_remote(store, remote)
    except PuppemonError:
        remote = None
    return RecordTarget(store, remote, push)
