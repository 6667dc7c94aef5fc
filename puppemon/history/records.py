"""The `runs` branch's records: run.json (schema 1), deploy records, commit messages, and reading them back."""
from __future__ import annotations

import json
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from puppemon.errors import PuppemonError
from puppemon.formats import dated_path, format_duration, run_dir, utc_compact, utc_iso
from puppemon.gitstore import EXEC, FILE, Store

SCHEMA = 1


@dataclass(frozen=True)
class RunContext:
    """What a run's record says besides its outcome: which run, who asked, which code, which daemon."""

    run_id: str
    flow: str
    trigger: dict
    scheduled: datetime | None = None
    params: dict = field(default_factory=dict)
    flows_commit: str = ""
    source_commit: str = ""
    daemon: str = ""
    request: str | None = None


def _record(ctx: RunContext, status: str, started: datetime, finished: datetime, duration: float,
            params: dict, error: str | None) -> dict:
    return {
        "schema": SCHEMA, "id": ctx.run_id, "flow": ctx.flow, "status": status, "trigger": ctx.trigger,
        "request": ctx.request, "params": params, "flows_commit": ctx.flows_commit,
        "source_commit": ctx.source_commit, "scheduled": utc_iso(ctx.scheduled), "started": utc_iso(started),
        "finished": utc_iso(finished), "duration": round(duration, 3), "attempt": 0, "attempts": [],
        "exit_code": None, "daemon": ctx.daemon, "host": socket.gethostname(), "outputs": [],
        "outputs_note": None, "has_result": False, "error": error,
    }


def run_record(result: Any, ctx: RunContext) -> dict:
    """run.json for a run.spec.RunResult."""
    record = _record(ctx, result.status, result.started, result.finished, result.duration, result.params,
                     result.error)
    record.update({
        "attempt": len(result.attempts),
        "attempts": [{"number": a.number, "status": a.status, "exit_code": a.exit_code,
                      "started": utc_iso(a.started), "finished": utc_iso(a.finished),
                      "duration": round(a.duration, 3)} for a in result.attempts],
        "exit_code": result.exit_code,
        "outputs": [{"path": o.path, "size": o.size, "sha256": o.sha256} for o in result.outputs],
        "outputs_note": result.outputs_note,
        "has_result": bool(result.has_result),
    })
    return record


def synthetic_record(ctx: RunContext, status: str, error: str | None, started: datetime,
                     finished: datetime | None = None) -> dict:
    """run.json for a run that never produced a RunResult (skipped, crashed, refused, cancelled unstarted)."""
    finished = finished or started
    return _record(ctx, status, started, finished, (finished - started).total_seconds(), dict(ctx.params), error)


def record_synthetic(recorder, ctx: RunContext, status: str, error: str, started: datetime,
                     finished: datetime | None = None) -> dict:
    """Commit the record of a run that never ran to its end, with `error` as its log; return run.json."""
    record = synthetic_record(ctx, status, error, started, finished)
    recorder.add(run_files(record, f"puppemon: {error}\n".encode()), run_message(record))
    return record


def trigger_text(trigger: dict) -> str:
    kind = trigger.get("kind", "?")
    by = trigger.get("by")
    return f"{kind} by {by}" if by and kind in ("manual", "request", "http", "cancel") else kind


def run_message(record: dict) -> str:
    """Subject `<flow>: <status> in <duration> (<trigger>)`, then the trailers plain git can grep."""
    subject = (f"{record['flow']}: {record['status']} in {format_duration(record['duration'])} "
               f"({trigger_text(record['trigger'])})")
    lines = [f"Puppemon-Run: {record['id']}", f"Puppemon-Flow: {record['flow']}",
             f"Puppemon-Status: {record['status']}"]
    if record.get("request"):
        lines.append(f"Puppemon-Request: {record['request']}")
    return subject + "\n\n" + "\n".join(lines) + "\n"


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


def deploy_record(sha: str, source: str, daemon: str, now: datetime, outcome: dict) -> tuple[dict, str]:
    """The files and commit message recording what a daemon made of a flows commit."""
    body = {"schema": SCHEMA, "flows_commit": sha, "source_commit": source, "daemon": daemon,
            "host": socket.gethostname(), "time": utc_iso(now), **outcome}
    path = dated_path("deploys", now, f"{sha}-{daemon}.json")  # one per daemon: never collide
    subject = (f"deploy {sha[:7]}: {outcome['status']}"
               + (f" ({len(outcome.get('flows', {}))} flows)" if outcome["status"] == "deployed" else ""))
    message = f"{subject}\n\nPuppemon-Deploy: {sha}\nPuppemon-Deploy-Status: {outcome['status']}\n"
    return {path: dump_json(body)}, message


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


def find_record(store: Store, tip: str | None, run_id: str, flow: str | None = None) -> dict | None:
    """run.json of `run_id` at `tip` (looked up in `flow`, else in every flow), or None."""
    if not tip:
        return None
    flows = [flow] if flow else [e.name for e in store.listdir(tip, "runs") if e.is_tree]
    for name in flows:
        data = store.read(tip, f"{run_dir(name, run_id)}/run.json")
        if data is not None:
            return json.loads(data)
    return None


# -- reading -------------------------------------------------------------------

class RunStore:
    """Read access to a runs branch (newest first, without walking more history than asked)."""

    def __init__(self, store: Store, ref: str = "refs/heads/runs") -> None:
        self.store = store
        self.ref = ref
        self.tip = store.ref(ref)

    def _run_json(self, flow: str, run_id: str) -> dict | None:
        return find_record(self.store, self.tip, run_id, flow)

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
