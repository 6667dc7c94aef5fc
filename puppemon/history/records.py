"""The `runs` branch's records: run.json (schema 1), deploy records, commit messages, and reading them back."""
from __future__ import annotations

import heapq
import itertools
import json
import re
import socket
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterator

from puppemon.errors import PuppemonError
from puppemon.formats import (ARCHIVE_PREFIX, RUN_ID, archive_ref, dated_path, format_duration, id_day, is_flow_name,
                              parse_iso, plural, run_dir, utc_compact, utc_iso)
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
    environment: dict | None = None    # the Python environment it ran in: {key, python}


def _record(ctx: RunContext, status: str, started: datetime, finished: datetime, duration: float,
            params: dict, error: str | None) -> dict:
    return {
        "schema": SCHEMA, "id": ctx.run_id, "flow": ctx.flow, "status": status, "trigger": ctx.trigger,
        "request": ctx.request, "params": params, "flows_commit": ctx.flows_commit,
        "source_commit": ctx.source_commit, "scheduled": utc_iso(ctx.scheduled), "started": utc_iso(started),
        "finished": utc_iso(finished), "duration": round(duration, 3), "attempt": 0, "attempts": [],
        "exit_code": None, "daemon": ctx.daemon, "host": socket.gethostname(), "outputs": [],
        "outputs_note": None, "has_result": False, "error": error, "environment": ctx.environment,
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
        "escaped": result.escaped,  # processes it left running outside its group, stopped
    })
    return record


def synthetic_record(ctx: RunContext, status: str, error: str | None, started: datetime,
                     finished: datetime | None = None) -> dict:
    """run.json for a run that never produced a RunResult (skipped, crashed, refused, cancelled unstarted)."""
    finished = finished or started
    return _record(ctx, status, started, finished, (finished - started).total_seconds(), dict(ctx.params), error)


def one_line(value, limit: int = 200) -> str:
    """`value` as text that cannot add a line (to a commit message, a log, a table): every control or
    line-separator character becomes a space, and it is cut at `limit` characters."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return text if len(text) <= limit else text[:limit - 3] + "..."


def trigger_text(trigger: dict) -> str:
    kind = one_line(trigger.get("kind", "?"), 40)
    by = trigger.get("by")
    return f"{kind} by {one_line(by, 100)}" if by and kind in ("manual", "request", "http", "cancel") else kind


def run_message(record: dict) -> str:
    """Subject `<flow>: <status> in <duration> (<trigger>)`, then the trailers plain git can grep.

    Every value goes through one_line: whatever a request carried, it cannot add a line (a trailer)."""
    flow, status, run_id = (one_line(record[k], 100) for k in ("flow", "status", "id"))
    subject = f"{flow}: {status} in {format_duration(record['duration'])} ({trigger_text(record['trigger'])})"
    lines = [f"Puppemon-Run: {run_id}", f"Puppemon-Flow: {flow}", f"Puppemon-Status: {status}"]
    if record.get("request"):
        lines.append(f"Puppemon-Request: {one_line(record['request'], 100)}")
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
               + (f" ({plural(len(outcome.get('flows', {})), 'flow')})" if outcome["status"] == "deployed" else ""))
    message = f"{subject}\n\nPuppemon-Deploy: {sha}\nPuppemon-Deploy-Status: {outcome['status']}\n"
    return {path: dump_json(body)}, message


def dump_json(value: Any) -> bytes:
    return (json.dumps(value, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


def trailers(message: str) -> dict[str, str]:
    """Puppemon-* trailers of a commit message: its last paragraph, as git reads trailers, the first of
    each key (so a line forged into a subject or a value, by older versions, does not override ours)."""
    paragraphs = re.split(r"\n[ \t]*\n", message.strip("\n"))
    found: dict[str, str] = {}
    if len(paragraphs) < 2:
        return found  # a subject alone has no trailers
    for line in paragraphs[-1].split("\n"):
        key, sep, value = line.partition(": ")
        if sep and key.startswith("Puppemon-") and key not in found:
            found[key] = value.strip()
    return found


def record_problem(record: Any, run_id: str | None = None) -> str | None:
    """Why `record` (a parsed run.json) cannot be shown, or None: the fields readers rely on, checked."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not (isinstance(record.get("id"), str) and RUN_ID.match(record["id"])):
        return "no run id"
    if run_id is not None and record["id"] != run_id:
        return f"its id is not {run_id}"
    for key, kinds in (("flow", str), ("status", str), ("trigger", (dict, type(None))),
                       ("duration", (int, float, type(None))), ("error", (str, type(None))),
                       ("flows_commit", (str, type(None))), ("source_commit", (str, type(None))),
                       ("daemon", (str, type(None))), ("outputs", (list, type(None))),
                       ("outputs_note", (str, type(None)))):
        if not isinstance(record.get(key), kinds) or isinstance(record.get(key), bool):
            return f"{key} is {type(record.get(key)).__name__}"
    for key in ("scheduled", "started", "finished"):
        try:
            parse_iso(record.get(key))
        except (TypeError, ValueError, AttributeError):
            return f"{key} is not a time"
    if not all(isinstance(o, dict) and isinstance(o.get("path"), str) and isinstance(o.get("size"), int)
               for o in record.get("outputs") or []):
        return "outputs are not a list of files"
    return None


def parse_record(data: bytes, run_id: str | None = None) -> dict | None:
    """run.json from its bytes, or None when it is not one a reader can show."""
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return None if record_problem(record, run_id) else record


def _record_paths(store: Store, tip: str | None, run_id: str, flow: str | None) -> list[str]:
    if not tip or not isinstance(run_id, str) or not RUN_ID.match(run_id):
        return []
    flows = [flow] if flow else [e.name for e in store.listdir(tip, "runs") if e.is_tree]
    return [f"{run_dir(name, run_id)}/run.json" for name in flows if is_flow_name(name)]


def record_tips(store: Store, tip: str | None, run_id: str) -> Iterator[str]:
    """Where the record of `run_id` can be: `tip`, then the archive of its month (its day rotated out),
    whose ref is looked up only when asked for (one that is not there costs a file system lookup or two)."""
    if tip:
        yield tip
    archive = store.ref(archive_ref(id_day(run_id))) if isinstance(run_id, str) and RUN_ID.match(run_id) else None
    if archive:
        yield archive


def find_record(store: Store, tip: str | None, run_id: str, flow: str | None = None) -> dict | None:
    """run.json of `run_id` at `tip` or in its month's archive (looked up in `flow`, else in every flow),
    or None: when there is none, or none that can be read (see is_recorded)."""
    for where in record_tips(store, tip, run_id):
        for path in _record_paths(store, where, run_id, flow):
            data = store.read(where, path)
            if data is not None:
                return parse_record(data, run_id)
    return None


def is_recorded(store: Store, tip: str | None, run_id: str, flow: str | None = None) -> bool:
    """Whether a run.json of `run_id` is at `tip` or in its month's archive, readable or not (a run to
    start no more)."""
    return any(store.lookup(where, path) is not None for where in record_tips(store, tip, run_id)
               for path in _record_paths(store, where, run_id, flow))


# -- reading -------------------------------------------------------------------

class RunStore:
    """Read access to a runs branch and its archive refs (newest first, without walking more than asked).

    The tip holds recent records; days that rotated out are in `refs/puppemon/archive/<yyyy>-<mm>`
    (history/rotation.py), read here as if they were still on the tip."""

    # Anyone who can push to the remote can write to the branch: what is not a record a reader can show
    # (a name that is no date or run id, a run.json that does not parse) is skipped and counted here.
    def __init__(self, store: Store, ref: str = "refs/heads/runs") -> None:
        self.store = store
        self.ref = ref
        self.tip = store.ref(ref)
        # archive tips, newest month first
        self.archives = [sha for _, sha in sorted(store.refs(ARCHIVE_PREFIX).items(), reverse=True)]
        self.skipped = 0

    def _read(self, flow: str, run_id: str, name: str) -> bytes | None:
        """A file of a run's directory, from the tip or its month's archive."""
        path = f"{run_dir(flow, run_id)}/{name}"
        for where in record_tips(self.store, self.tip, run_id):
            data = self.store.read(where, path)
            if data is not None:
                return data
        return None

    def _run_json(self, flow: str, run_id: str) -> dict | None:
        data = self._read(flow, run_id, "run.json") if is_flow_name(flow) else None
        record = parse_record(data, run_id) if data is not None else None
        if data is not None and (record is None or record["flow"] != flow):
            self.skipped += 1
            return None
        return record

    def flows(self) -> list[str]:
        names = {e.name for where in (self.tip, *self.archives) if where
                 for e in self.store.listdir(where, "runs") if e.is_tree and is_flow_name(e.name)}
        return sorted(names)

    def _names(self, where: str, path: str, pattern: str) -> list[str]:
        """Names in the directory at `path` that match `pattern`, newest first; the others are counted."""
        names = [e.name for e in self.store.listdir(where, path)]
        good = [n for n in names if re.fullmatch(pattern, n, re.ASCII)]
        self.skipped += len(names) - len(good)
        return sorted(good, reverse=True)

    def _dated_ids(self, where: str, flow: str, until: str | None) -> Iterator[str]:
        """Run ids of one flow at one tip, newest first, by walking its dated trees in reverse (days after
        `until`, an id or id prefix, are not opened)."""
        base = f"runs/{flow}"
        for year in self._names(where, base, r"[0-9]{4}"):
            for month in self._names(where, f"{base}/{year}", r"[0-9]{2}"):
                for day in self._names(where, f"{base}/{year}/{month}", r"[0-9]{2}"):
                    if until and f"{year}{month}{day}" > until[:8]:
                        continue
                    for run_id in self._names(where, f"{base}/{year}/{month}/{day}", RUN_ID.pattern):
                        if run_id.startswith(f"{year}{month}{day}"):
                            yield run_id

    def _flow_run_ids(self, flow: str, until: str | None = None) -> Iterator[str]:
        """Run ids of one flow, newest first: the tip's merged with the archives' (one month after the
        other, so an older archive is opened only when the newer ones are used up)."""
        if not is_flow_name(flow):
            return iter(())
        archived = itertools.chain.from_iterable(self._dated_ids(a, flow, until) for a in self.archives)
        tips = [self._dated_ids(self.tip, flow, until)] if self.tip else []
        merged = heapq.merge(*tips, archived, reverse=True)
        return (run_id for run_id, _ in itertools.groupby(merged))  # a day on both (written after it rotated)

    def list(self, flow: str | None = None, status: str | None = None, since: datetime | None = None,
             limit: int | None = None, until: datetime | None = None) -> list[dict]:
        """run.json of matching runs (started from `since` to `until`), newest first."""
        found: list[dict] = []
        since_id = utc_compact(since) if since else None
        until_id = utc_compact(until) if until else None
        flows = [flow] if flow is not None else self.flows()
        each = [zip(itertools.repeat(name), self._flow_run_ids(name, until_id)) for name in flows]
        for flow_name, run_id in heapq.merge(*each, key=lambda c: c[1], reverse=True):
            if until_id and run_id > until_id:
                continue
            if since_id and run_id < since_id:
                break
            record = self._run_json(flow_name, run_id)
            if record is None or (status and record.get("status") != status):
                continue
            found.append(record)
            if limit is not None and len(found) >= limit:
                break
        return found

    def recent_ids(self, limit: int, prefix: str = "") -> list[str]:
        """The newest `limit` run ids of every flow that start with `prefix`, from the tree names alone
        (no record is read; days after a date prefix are not opened)."""
        until = prefix if re.fullmatch(r"[0-9]{8}.*", prefix) else None
        each = [self._flow_run_ids(name, until) for name in self.flows()]
        found = (run_id for run_id in heapq.merge(*each, reverse=True) if run_id.startswith(prefix))
        return list(itertools.islice(found, limit))

    def _ids_from_history(self) -> Iterator[tuple[str, str]]:
        """(flow, run id) from the run commits on the branch, newest commit first."""
        seen = set()
        for commit in self.store.first_parent_log(self.tip):
            t = trailers(commit.message)
            run_id, flow = t.get("Puppemon-Run"), t.get("Puppemon-Flow")
            if not (run_id and flow) or run_id in seen:
                continue
            seen.add(run_id)
            if RUN_ID.match(run_id) and is_flow_name(flow):
                yield flow, run_id
            else:
                self.skipped += 1  # a run commit whose trailers name no run puppemon could have recorded

    def _ids_of_day(self, yyyy: str, mm: str, dd: str) -> Iterator[tuple[str, str]]:
        """(flow, run id) of every run directory of one day, on the tip and in its archive."""
        for flow in self.flows():
            for where in record_tips(self.store, self.tip, f"{yyyy}{mm}{dd}T000000Z-0"):
                for entry in self.store.listdir(where, f"runs/{flow}/{yyyy}/{mm}/{dd}"):
                    yield flow, entry.name

    def matches(self, id_or_prefix: str) -> list[tuple[str, str]]:
        """(flow, run id) of the recorded runs whose id starts with `id_or_prefix` (one that names no day:
        whose id holds it, found in the branch's run commits)."""
        if not self.tip and not self.archives:
            return []
        date = re.match(r"^([0-9]{4})([0-9]{2})([0-9]{2})", id_or_prefix)
        if date:
            return sorted({(f, r) for f, r in self._ids_of_day(*date.groups())
                           if r.startswith(id_or_prefix) and RUN_ID.match(r)})
        return [(f, r) for f, r in self._ids_from_history() if id_or_prefix in r]

    def find(self, id_or_prefix: str) -> dict:
        """run.json of the run whose id is, or uniquely starts with, `id_or_prefix`."""
        if not self.tip and not self.archives:
            raise PuppemonError("there are no runs recorded yet")
        matches = self.matches(id_or_prefix)
        if not matches:
            raise PuppemonError(f"no run with id {id_or_prefix!r}; list runs with `puppemon runs`")
        if len(matches) > 1:
            shown = ", ".join(r for _, r in matches[:5])
            raise PuppemonError(f"{id_or_prefix!r} matches {len(matches)} runs ({shown}); give more of the id")
        return self.record(*matches[0])

    def record(self, flow: str, run_id: str) -> dict:
        """run.json of a run `matches` found; an error says when it cannot be read."""
        record = self._run_json(flow, run_id)
        if record is None:
            self.skipped -= 1  # said in the error, not counted
            raise PuppemonError(f"the record of run {run_id} ({run_dir(flow, run_id)}/run.json) cannot be "
                                f"read: it is not a run.json this version of puppemon understands")
        return record

    def skipped_note(self) -> str | None:
        """`2 records on runs could not be read (skipped)`, once a reader has skipped any."""
        if not self.skipped:
            return None
        branch = self.ref.removeprefix("refs/heads/")
        return (f"{self.skipped} record{'s' if self.skipped != 1 else ''} on {branch} could not be read "
                f"(skipped)")

    def flow_ids(self, flow: str, until: str | None = None) -> Iterator[str]:
        """Run ids of `flow`, newest first, from tree names alone (days after `until` are not opened)."""
        return self._flow_run_ids(flow, until)

    def get(self, flow: str, run_id: str) -> dict | None:
        """run.json of one run of `flow`, or None when there is none that can be read."""
        return self._run_json(flow, run_id)

    def latest(self, flow: str) -> dict | None:
        runs = self.list(flow=flow, limit=1)
        return runs[0] if runs else None

    def read_file(self, record: dict, name: str) -> bytes | None:
        """A file of a run (`log.txt`, `result.json`, `outputs/...`)."""
        return self._read(record["flow"], record["id"], name)
