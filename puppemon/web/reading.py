"""What the dashboard's pages show, read from a repository's refs: the runs tip (and the archive refs, a
bounded range of them), the flows tip, the daemons' status refs and live refs.

No page walks the whole history: the overview reads the last CELLS runs of each flow and the last day of
runs, a flow page one page of run ids (tree names) and their records, the deploys page a bounded number
of deploy records and flows commits. What depends on the refs alone is cached by their tips.
"""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

from puppemon.formats import ARCHIVE_PREFIX, RUN_ID, is_flow_name, parse_iso
from puppemon.history.control import read_states
from puppemon.history.lookup import in_flight, locate
from puppemon.history.records import RunStore
from puppemon.history.status import FLOWS_TIP, LIVE_REFS, STATUS_REFS, statuses

CELLS = 30          # runs of each flow on the overview
PAGE = 50           # runs on a page of a flow
CHART = 100         # runs in a flow's duration chart and failure rate
DEPLOYS = 30        # deploys on the deploys page
PREVIOUS = 3        # records tried for a run's previous one (an unreadable one is skipped)
GOOD = ("succeeded", "skipped")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class NotFound(LookupError):
    """No such flow or run: a 404 page, with this message."""


@dataclass
class Sources:
    """Where the pages read from: a Store and the refs of the runs and flows branches (a clone's, or a
    daemon's mirror); `live`: run id -> its live tail (history.live.Tail) or None."""

    store: object
    runs_ref: str = "refs/heads/runs"
    flows_ref: str = FLOWS_TIP
    live: Callable[[str], object] | None = None
    clock: Callable[[], datetime] = utcnow
    cache: dict = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self) -> tuple:
        """What every page depends on: the tips of the runs and flows branches, the status and live refs."""
        store = self.store   # (and the half minute: heartbeat ages and the last 24 h move with the clock)
        return (int(self.clock().timestamp() // 30), store.ref(self.runs_ref), store.ref(self.flows_ref),
                tuple(sorted(store.refs(STATUS_REFS).items())), tuple(sorted(store.refs(LIVE_REFS).items())),
                tuple(sorted(store.refs("refs/puppemon/archive/").items())))

    def cached(self, name: str, make: Callable[[], object]):
        """make() once per state of the refs (a few pages of each kind kept)."""
        key = (name, self.key())
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        value = make()
        with self.lock:
            if len(self.cache) > 256:
                self.cache.clear()
            self.cache[key] = value
        return value

    def runs(self) -> RunStore:
        return RunStore(self.store, self.runs_ref)

    def tail(self, run_id: str):
        if self.live is not None:
            return self.live(run_id)
        from puppemon.history.live import read_tail

        return read_tail(self.store, run_id)


def manifest_flows(sources: Sources) -> dict:
    """The flows of the deployed manifest (project.manifest.Flow by name); {} when none can be read."""
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, parse

    tip = sources.store.ref(sources.flows_ref)
    data = sources.store.read(tip, MANIFEST_NAME) if tip else None
    if data is None:
        return {}
    try:
        return dict(parse(data, MANIFEST_NAME).flows)
    except ManifestError:
        return {}


def _daemons(sources: Sources, now: datetime) -> list[dict]:
    found, _unreadable = statuses(sources.store, now)
    return found


def _flying(daemons: list[dict]) -> dict:
    """The runs in flight on the daemons still heartbeating (a stale daemon's runs are not running here), as
    history.status.heartbeating picks them for the CLI."""
    return in_flight([d for d in daemons if not d["stale"] and d.get("state") != "stopped"])


def _next_fire(daemons: list[dict], flow: str) -> str | None:
    times = sorted(info["next"] for d in daemons if not d.get("gone")
                   for name, info in (d.get("flows") or {}).items() if name == flow and info.get("next"))
    return times[0] if times else None


def _counts(records: list[dict]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts


def overview(sources: Sources) -> dict:
    """The overview: a row per flow (its last runs, next fire, paused state, runs in flight), the daemons."""
    return _aged(sources.cached("overview", lambda: _overview(sources, sources.clock())), sources.clock())


def _overview(sources: Sources, now: datetime) -> dict:
    runs, manifest = sources.runs(), manifest_flows(sources)
    daemons = _daemons(sources, now)
    flying = _flying(daemons)
    states = read_states(sources.store, runs.tip)
    since = now - timedelta(days=1)
    rows = []
    for name in sorted(set(runs.flows()) | set(manifest)):
        recent = runs.list(flow=name, limit=CELLS)
        day = runs.list(flow=name, since=since)
        state = states.get(name)
        rows.append({
            "flow": name, "runs": recent, "last_status": recent[0]["status"] if recent else None,
            "next": _next_fire(daemons, name), "timezone": manifest[name].timezone if name in manifest else "UTC",
            "deployed": name in manifest, "paused": state if state and state["paused"] else None,
            "in_flight": [{"run_id": rid, **run} for rid, run in sorted(flying.items())
                          if run["flow"] == name and rid not in {r["id"] for r in recent}],  # a status lags
            "last_24h": _counts(day)})
    rows.sort(key=lambda r: (r["last_status"] in GOOD or r["last_status"] is None, r["flow"]))
    total = _counts([{"status": s} for r in rows for s, n in r["last_24h"].items() for _ in range(n)])
    return {"generated": now.isoformat(), "runs_tip": runs.tip, "flows_tip": sources.store.ref(sources.flows_ref),
            "flows": rows, "last_24h": total, "daemons": [_daemon(d) for d in daemons]}


def _daemon(status: dict) -> dict:
    keys = ("name", "host", "state", "heartbeat", "stale", "gone", "flows_commit", "labels", "version")
    return {**{k: status.get(k) for k in keys}, "in_flight": len(status.get("in_flight") or [])}


def _aged(data: dict, now: datetime) -> dict:
    """`data` with the ages that change with time (heartbeats, runs in flight) worked out for `now`."""
    def age(text):
        moment = parse_iso(text) if isinstance(text, str) else None
        return round((now - moment).total_seconds(), 1) if moment else None

    daemons = [{**d, "heartbeat_age": age(d.get("heartbeat"))} for d in data["daemons"]]
    flows = [{**row, "in_flight": [{**run, "elapsed": age(run.get("started"))} for run in row["in_flight"]]}
             for row in data["flows"]]
    return {**data, "daemons": daemons, "flows": flows, "now": now.isoformat()}


def flow_page(sources: Sources, flow: str, page: int = 1) -> dict:
    """One flow: a page of its runs, its duration chart and failure rate, its manifest entry."""
    if not is_flow_name(flow):
        raise NotFound(f"{flow!r} is not a flow name")
    return sources.cached(f"flow/{flow}/{page}", lambda: _flow_page(sources, flow, max(1, page)))


def _flow_page(sources: Sources, flow: str, page: int) -> dict:
    runs, manifest = sources.runs(), manifest_flows(sources)
    if flow not in manifest and flow not in runs.flows():
        raise NotFound(f"no flow {flow!r}: it is neither deployed nor has it any run recorded")
    ids = list(itertools.islice(runs.flow_ids(flow), (page - 1) * PAGE, page * PAGE + 1))
    shown = [r for r in (runs.get(flow, rid) for rid in ids[:PAGE]) if r is not None]
    chart = sources.cached(f"chart/{flow}", lambda: runs.list(flow=flow, limit=CHART))
    failed = sum(1 for r in chart if r["status"] not in GOOD)
    state = read_states(sources.store, runs.tip).get(flow)
    entry = manifest.get(flow)
    daemons = _daemons(sources, sources.clock())
    return {"flow": flow, "page": page, "more": len(ids) > PAGE, "runs": shown,
            "chart": [{"id": r["id"], "status": r["status"], "duration": r.get("duration") or 0}
                      for r in reversed(chart)],
            "failure_rate": round(failed / len(chart), 3) if chart else None,
            "paused": state if state and state["paused"] else None, "deployed": entry is not None,
            "manifest": _entry(entry) if entry is not None else None, "next": _next_fire(daemons, flow),
            "in_flight": [{"run_id": rid, **run} for rid, run in sorted(_flying(daemons).items())
                          if run["flow"] == flow]}


def _entry(flow) -> dict:
    """A manifest entry as the flow page shows it (and its Run form's params)."""
    from puppemon.project.triggers import describe

    return {"entrypoint": flow.entrypoint, "command": flow.command if isinstance(flow.command, str)
            else list(flow.command) if flow.command else None, "trigger": describe(flow),
            "timezone": flow.timezone, "params": flow.params, "timeout": flow.timeout, "retries": flow.retries,
            "overlap": flow.overlap, "runs_on": list(flow.runs_on)}


def find_run(sources: Sources, run_id: str):
    """The run `run_id` names, in whichever state (history.lookup.Located); NotFound when none."""
    from puppemon.errors import PuppemonError

    if not (isinstance(run_id, str) and RUN_ID.match(run_id)):
        raise NotFound(f"{run_id!r} is not a run id")
    runs, now = sources.runs(), sources.clock()
    try:
        return runs, locate(runs, run_id, now, lambda: _flying(_daemons(sources, now)))
    except PuppemonError as exc:
        raise NotFound(str(exc)) from None


def previous_run(runs: RunStore, record: dict) -> dict | None:
    """The run of the same flow recorded just before `record` (bounded: the ids of its day and before)."""
    older = (rid for rid in runs.flow_ids(record["flow"], until=record["id"]) if rid < record["id"])
    return first_readable(runs, record["flow"], older)


def first_readable(runs: RunStore, flow: str, ids) -> dict | None:
    """The record of the first of `ids` (newest first) that can be read, trying PREVIOUS of them at most."""
    return next((r for r in (runs.get(flow, rid) for rid in itertools.islice(ids, PREVIOUS)) if r), None)


def deploys(sources: Sources) -> dict:
    """The last DEPLOYS deploys: the flows commits (source, dirty, changed files) and what daemons made of them."""
    return sources.cached("deploys", lambda: _deploys(sources))


def _deploys(sources: Sources) -> dict:
    from puppemon.history.records import trailers
    from puppemon.web.diffs import deploy_diffs

    store = sources.store
    outcomes = _deploy_records(sources)
    found = []
    for commit in itertools.islice(store.first_parent_log(store.ref(sources.flows_ref)), DEPLOYS):
        t = trailers(commit.message)
        parent = store.get_commit(commit.parents[0]).tree if commit.parents else None
        found.append({"commit": commit.sha, "subject": commit.message.split("\n", 1)[0],
                      "time": datetime.fromtimestamp(commit.time, timezone.utc).isoformat(),
                      "source_commit": t.get("Puppemon-Source-Commit"), "source_branch": t.get("Puppemon-Source-Branch"),
                      "dirty": t.get("Puppemon-Dirty") == "true", "pushed_by": t.get("Puppemon-Pushed-By"),
                      "parent": commit.parents[0] if commit.parents else None,
                      "changes": deploy_diffs(store, parent, store.diff(parent, commit.tree)[:200]),
                      "outcomes": outcomes.get(commit.sha, [])})
    return {"deploys": found}


def _deploy_records(sources: Sources) -> dict[str, list[dict]]:
    """The deploy records of the newest days (what each daemon made of a flows commit): on the runs tip,
    then in the month archives the older days were rotated into, newest first."""
    import json

    store = sources.store
    found: dict[str, list[dict]] = {}
    count = 0
    for where, day in _deploy_days(store, store.ref(sources.runs_ref)):
        for entry in store.listdir(where, day):
            try:
                body = json.loads(store.data(entry.oid)) if not entry.is_tree else None
            except ValueError:
                body = None
            if isinstance(body, dict) and isinstance(body.get("flows_commit"), str):
                found.setdefault(body["flows_commit"], []).append(body)
                count += 1
        if count >= DEPLOYS * 4:
            break
    return found


def _deploy_days(store, tip: str | None):
    """(commit, `deploys/<yyyy>/<mm>/<dd>`) newest first: the tip's days, then each archive's."""
    yield from ((tip, day) for day in _newest_days(store, tip, "deploys"))
    for _name, archive in sorted(store.refs(ARCHIVE_PREFIX).items(), reverse=True):
        yield from ((archive, day) for day in _newest_days(store, archive, "deploys"))


def _newest_days(store, tip: str | None, base: str):
    """`deploys/<yyyy>/<mm>/<dd>` directories at `tip`, newest first (generated: opened as needed)."""
    if not tip:
        return
    for year in sorted((e.name for e in store.listdir(tip, base) if e.is_tree), reverse=True):
        for month in sorted((e.name for e in store.listdir(tip, f"{base}/{year}") if e.is_tree), reverse=True):
            for day in sorted((e.name for e in store.listdir(tip, f"{base}/{year}/{month}") if e.is_tree),
                              reverse=True):
                yield f"{base}/{year}/{month}/{day}"
