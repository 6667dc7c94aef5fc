"""The `runs` branch: run.json (schema 1), where records live, and how to read them back."""
from __future__ import annotations

import json
import re
import socket
from datetime import datetime, timezone
from typing import Any, Iterator

from puppemon.errors import PuppemonError
from puppemon.gitstore import EXEC, FILE, Store

SCHEMA = 1
STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "crashed", "skipped")
RUN_ID = re.compile(r"^(\d{4})(\d{2})(\d{2})T\d{6}Z-[0-9a-f]+$")


def utc_iso(moment: datetime | None) -> str | None:
    """UTC ISO 8601 with a Z, to the millisecond."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def run_dir(flow: str, run_id: str) -> str:
    """`runs/<flow>/<yyyy>/<mm>/<dd>/<run-id>`, dated by the run id (its UTC start)."""
    match = RUN_ID.match(run_id)
    if not match:
        raise PuppemonError(f"{run_id!r} is not a run id (expected e.g. 20261125T083000Z-7f3a9c)")
    yyyy, mm, dd = match.groups()
    return f"runs/{flow}/{yyyy}/{mm}/{dd}/{run_id}"


def dated_path(kind: str, moment: datetime, name: str) -> str:
    """`<kind>/<yyyy>/<mm>/<dd>/<name>` for requests and deploys."""
    d = moment.astimezone(timezone.utc)
    return f"{kind}/{d:%Y}/{d:%m}/{d:%d}/{name}"


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def run_record(result: Any, *, trigger: dict, flows_commit: str = "", source_commit: str = "",
               scheduled: datetime | None = None, daemon: str = "", host: str | None = None,
               request: str | None = None) -> dict:
    """run.json for a runner.RunResult."""
    attempts = [{
        "number": a.number, "status": a.status, "exit_code": a.exit_code,
        "started": utc_iso(a.started), "finished": utc_iso(a.finished), "duration": round(a.duration, 3),
    } for a in result.attempts]
    return {
        "schema": SCHEMA,
        "id": result.run_id,
        "flow": result.flow,
        "status": result.status,
        "trigger": trigger,
        "request": request,
        "params": result.params,
        "flows_commit": flows_commit,
        "source_commit": source_commit,
        "scheduled": utc_iso(scheduled),
        "started": utc_iso(result.started),
        "finished": utc_iso(result.finished),
        "duration": round(result.duration, 3),
        "attempt": len(result.attempts),
        "attempts": attempts,
        "exit_code": result.exit_code,
        "daemon": daemon,
        "host": host or socket.gethostname(),
        "outputs": [{"path": o.path, "size": o.size, "sha256": o.sha256} for o in result.outputs],
        "outputs_note": result.outputs_note,
        "has_result": bool(result.has_result),
        "error": result.error,
    }


def synthetic_record(run_id: str, flow: str, status: str, *, trigger: dict, error: str | None,
                     started: datetime, finished: datetime | None = None, scheduled: datetime | None = None,
                     params: dict | None = None, flows_commit: str = "", source_commit: str = "",
                     daemon: str = "", request: str | None = None) -> dict:
    """run.json for a run that never produced a RunResult (skipped, crashed, refused)."""
    finished = finished or started
    return {
        "schema": SCHEMA, "id": run_id, "flow": flow, "status": status, "trigger": trigger,
        "request": request, "params": params or {}, "flows_commit": flows_commit,
        "source_commit": source_commit, "scheduled": utc_iso(scheduled), "started": utc_iso(started),
        "finished": utc_iso(finished), "duration": round((finished - started).total_seconds(), 3),
        "attempt": 0, "attempts": [], "exit_code": None, "daemon": daemon, "host": socket.gethostname(),
        "outputs": [], "outputs_note": None, "has_result": False, "error": error,
    }


def trigger_text(trigger: dict) -> str:
    kind = trigger.get("kind", "?")
    by = trigger.get("by")
    return f"{kind} by {by}" if by and kind in ("manual", "request", "http", "cancel") else kind


def run_message(record: dict) -> str:
    """Subject `<flow>: <status> in <duration> (<trigger>)`, then the trailers plain git can grep."""
    subject = (f"{record['flow']}: {record['status']} in {format_seconds(record['duration'])} "
               f"({trigger_text(record['trigger'])})")
    trailers = [f"Puppemon-Run: {record['id']}", f"Puppemon-Flow: {record['flow']}",
                f"Puppemon-Status: {record['status']}"]
    if record.get("request"):
        trailers.append(f"Puppemon-Request: {record['request']}")
    return subject + "\n\n" + "\n".join(trailers) + "\n"


def run_files(record: dict, log: bytes = b"", result: Any = None, has_result: bool = False,
              outputs: list | None = None) -> dict[str, tuple[bytes, int]]:
    """The files of one run, by path on the runs branch."""
    base = run_dir(record["flow"], record["id"])
    files = {f"{base}/run.json": (dump_json(record), FILE), f"{base}/log.txt": (log, FILE)}
    if has_result:
        files[f"{base}/result.json"] = (dump_json(result), FILE)
    for out in outputs or []:
        files[f"{base}/outputs/{out.path}"] = (out.data, EXEC if out.executable else FILE)
    return files


def dump_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


def trailers(message: str) -> dict[str, str]:
    """Puppemon-* trailers of a commit message."""
    found = {}
    for line in message.splitlines():
        key, sep, value = line.partition(": ")
        if sep and key.startswith("Puppemon-"):
            found[key] = value.strip()
    return found


# -- reading -------------------------------------------------------------------

class RunStore:
    """Read access to a runs branch (newest first, without walking more history than asked)."""

    def __init__(self, store: Store, ref: str = "refs/heads/runs") -> None:
        self.store = store
        self.ref = ref
        self.tip = store.ref(ref)

    def _run_json(self, flow: str, run_id: str) -> dict | None:
        data = self.store.read(self.tip, f"{run_dir(flow, run_id)}/run.json")
        return json.loads(data) if data is not None else None

    def flows(self) -> list[str]:
        if not self.tip:
            return []
        return sorted(e.name for e in self.store.listdir(self.tip, "runs") if e.is_tree)

    def _flow_run_ids(self, flow: str) -> Iterator[str]:
        """Run ids of one flow, newest first, by walking its dated trees in reverse."""
        listdir = self.store.listdir
        base = f"runs/{flow}"
        for year in sorted((e.name for e in listdir(self.tip, base)), reverse=True):
            for month in sorted((e.name for e in listdir(self.tip, f"{base}/{year}")), reverse=True):
                for day in sorted((e.name for e in listdir(self.tip, f"{base}/{year}/{month}")), reverse=True):
                    names = [e.name for e in listdir(self.tip, f"{base}/{year}/{month}/{day}")]
                    yield from sorted(names, reverse=True)

    def list(self, flow: str | None = None, status: str | None = None, since: datetime | None = None,
             limit: int | None = None) -> list[dict]:
        """run.json of matching runs, newest first."""
        if not self.tip:
            return []
        found: list[dict] = []
        since_id = utc_compact(since) if since else None
        if flow is not None:
            candidates = ((flow, rid) for rid in self._flow_run_ids(flow))
        else:
            candidates = self._ids_from_history()
        for flow_name, run_id in candidates:
            if since_id and run_id < since_id:
                if flow is not None:
                    break
                continue
            record = self._run_json(flow_name, run_id)
            if record is None or (status and record.get("status") != status):
                continue
            found.append(record)
            if limit is not None and len(found) >= limit:
                break
        if flow is None:
            found.sort(key=lambda r: r["id"], reverse=True)
        return found

    def _ids_from_history(self) -> Iterator[tuple[str, str]]:
        """(flow, run id) from the run commits on the branch, newest commit first."""
        seen = set()
        for commit in self.store.first_parent_log(self.tip):
            t = trailers(commit.message)
            run_id, flow = t.get("Puppemon-Run"), t.get("Puppemon-Flow")
            if run_id and flow and run_id not in seen:
                seen.add(run_id)
                yield flow, run_id

    def find(self, id_or_prefix: str) -> dict:
        """run.json of the run whose id is, or uniquely starts with, `id_or_prefix`."""
        if not self.tip:
            raise PuppemonError("there are no runs recorded yet")
        matches: list[tuple[str, str]] = []
        date = re.match(r"^(\d{4})(\d{2})(\d{2})", id_or_prefix)
        if date:
            yyyy, mm, dd = date.groups()
            for flow in self.flows():
                for entry in self.store.listdir(self.tip, f"runs/{flow}/{yyyy}/{mm}/{dd}"):
                    if entry.name.startswith(id_or_prefix):
                        matches.append((flow, entry.name))
        else:
            matches = [(f, r) for f, r in self._ids_from_history() if id_or_prefix in r]
        if not matches:
            raise PuppemonError(f"no run with id {id_or_prefix!r}; list runs with `puppemon runs`")
        if len(matches) > 1:
            shown = ", ".join(r for _, r in matches[:5])
            raise PuppemonError(f"{id_or_prefix!r} matches {len(matches)} runs ({shown}); give more of the id")
        record = self._run_json(*matches[0])
        assert record is not None
        return record

    def latest(self, flow: str) -> dict | None:
        runs = self.list(flow=flow, limit=1)
        return runs[0] if runs else None

    def read_file(self, record: dict, name: str) -> bytes | None:
        """A file of a run (`log.txt`, `result.json`, `outputs/...`)."""
        return self.store.read(self.tip, f"{run_dir(record['flow'], record['id'])}/{name}")


def utc_compact(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
