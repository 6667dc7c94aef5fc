"""The daemon side of `after:` (project/chains.py): one run of a downstream flow per upstream run that ended
with one of the statuses it names, whichever daemon recorded that run, exactly once.

Two ways in. A run this daemon records reaches `recorded` at once (so a chain goes on without waiting for a
cycle, also under `--once`); every cycle, `cycle` looks at the upstream runs on the runs tip (what other
daemons recorded, fetched; and, at start, what was recorded while this daemon was down).

Exactly once: each downstream run has a claim (daemon/claims.py) whose key is fixed by the upstream run,
`claims/<day of the upstream run>/<downstream>/after-<upstream run id>.json`. With peers the claim is pushed
first and the first push wins; a daemon alone commits it too, without a push of its own (it goes out with
the records), because the claim is what a later start, or a daemon joining later, reads to know the
upstream run was followed. An upstream run whose downstream claim is on the tip is passed over.

How far back: an upstream run counts when it finished within LOOKBACK (a day) and its record is still on
the runs tip (today's and yesterday's UTC days), and when the deploy it ran with already chained the
downstream to it (so adding `after: extract` to a flow does not run it for extract's earlier runs).
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta, timezone

from puppemon.daemon.deployer import Deployment
from puppemon.daemon.queue import Pending
from puppemon.daemon.source import Source, SourceContext
from puppemon.formats import RUN_ID, claim_path, parse_iso, run_dir
from puppemon.gitstore import TooLarge
from puppemon.history.records import parse_record

log = logging.getLogger("puppemon")
UTC = timezone.utc

LOOKBACK = timedelta(days=1)    # an upstream run that finished longer ago starts nothing
MAX_RESULT = 64 * 1024          # an upstream result larger than this is not passed on (PUPPEMON_UPSTREAM_RESULT)
MAX_RECORD = 1024 * 1024        # a run.json larger than this is not one


def _day(run_id: str) -> datetime:
    yyyy, mm, dd = (int(x) for x in RUN_ID.match(run_id).groups())
    return datetime(yyyy, mm, dd, tzinfo=UTC)


class ChainSource(Source):
    """`after:` triggers: follows the runs of upstream flows, here and on the runs tip."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.lock = threading.Lock()
        self.deployment: Deployment | None = None
        self.asked: dict[str, datetime] = {}          # claim path -> when this process asked for its run
        self.listed: dict[str, tuple[str, set[str]]] = {}   # runs/<flow>/<day> -> (tree oid, run ids read)
        self.chained: dict[str, frozenset] = {}       # flows commit -> the (upstream, downstream) pairs it had

    def reconcile(self, deployment: Deployment, summary: dict[str, dict]) -> None:
        with self.lock:
            self.deployment = deployment
            self.listed.clear()   # runs passed over under the last deploy may start a flow of this one

    def catch_up(self, deployment: Deployment, once: bool) -> None:
        pass   # the first cycle looks back over the runs tip (`cycle`), once the daemon knows its peers

    # -- hearing upstream runs ---------------------------------------------------
    def recorded(self, record: dict) -> None:
        """A run this daemon recorded (in the thread that recorded it)."""
        deployment = self.deployment
        if deployment is not None and self._downstreams(deployment, record.get("flow")):
            self._follow(deployment, record, self.ctx.runs_tip())

    def cycle(self) -> None:
        """After the cycle's fetch: the upstream runs on the runs tip not followed yet."""
        deployment, tip = self.deployment, self.ctx.runs_tip()
        if deployment is None or tip is None or not self.ctx.ready():
            return   # before the daemon has seen who else is there, it starts nothing (daemon/peers.py)
        now = self.ctx.clock()
        days = sorted({f"{now - LOOKBACK:%Y/%m/%d}", f"{now:%Y/%m/%d}"})
        upstreams = {u.flow for flow in deployment.manifest.flows.values()
                     for u in (flow.trigger("after").upstreams if flow.trigger("after") else ())}
        wanted = {f"runs/{flow}/{day}" for flow in upstreams for day in days}
        for base in sorted(wanted):
            entry = self.ctx.store.lookup(tip, base)
            oid, seen = self.listed.get(base, ("", set()))
            if entry is None or entry.oid == oid:
                continue
            for run in self.ctx.store.listdir(tip, base):
                if run.name in seen or not RUN_ID.match(run.name):
                    continue
                seen.add(run.name)
                record = self._record(tip, f"{base}/{run.name}/run.json", run.name)
                if record is not None:
                    self._follow(deployment, record, tip)
            self.listed[base] = (entry.oid, seen)
        for base in set(self.listed) - wanted:
            del self.listed[base]
        with self.lock:
            self.asked = {path: when for path, when in self.asked.items() if when > now - 2 * LOOKBACK}

    def _record(self, tip: str, path: str, run_id: str) -> dict | None:
        """The run.json at `path`, when it is one and it is the record of the run and flow its path names."""
        try:
            data = self.ctx.store.read(tip, path, MAX_RECORD)
        except TooLarge:
            return None
        record = parse_record(data, run_id) if data is not None else None
        return record if record is not None and path.startswith(run_dir(record["flow"], run_id)) else None

    # -- starting downstream runs --------------------------------------------------
    def _downstreams(self, deployment: Deployment, upstream) -> list[tuple[str, tuple[str, ...]]]:
        """(downstream flow, statuses) of the flows of `deployment` that come after `upstream`."""
        found = []
        for name, flow in deployment.manifest.flows.items():
            after = flow.trigger("after")
            if after is not None and after.statuses(upstream):
                found.append((name, after.statuses(upstream)))
        return found

    def _follow(self, deployment: Deployment, record: dict, tip: str | None) -> None:
        """Ask for the downstream runs of the upstream run `record` that are due and not asked for yet."""
        upstream, run_id, status = record["flow"], record["id"], record["status"]
        finished = parse_iso(record.get("finished")) or _day(run_id)
        if finished.tzinfo is None:   # a record written without an offset: its times are UTC
            finished = finished.replace(tzinfo=timezone.utc)
        if finished < self.ctx.clock() - LOOKBACK:
            return
        for downstream, statuses in self._downstreams(deployment, upstream):
            if status not in statuses or not self._was_chained(record.get("flows_commit"), upstream, downstream):
                continue
            key = f"after-{run_id}"
            path = claim_path(downstream, _day(run_id), key)
            with self.lock:
                if path in self.asked:
                    continue
                self.asked[path] = self.ctx.clock()
            if tip is not None and self.ctx.store.lookup(tip, path) is not None:
                continue   # followed already: by this daemon before a restart, or by another
            trigger = {"kind": "after", "upstream": {"id": run_id, "flow": upstream, "status": status}}
            data = self._result(record, tip, trigger["upstream"])
            log.info("%s: after %s run %s (%s)", downstream, upstream, run_id, status)
            self.ctx.submit(Pending(downstream, trigger, fire=(_day(run_id), key), event=finished,
                                    trigger_data=data))

    def _result(self, record: dict, tip: str | None, upstream: dict) -> dict:
        """The upstream run's result.json for the run's environment, when it has one of at most MAX_RESULT
        bytes; above, the trigger notes its size instead (the run may read it from the runs branch)."""
        if not record.get("has_result") or tip is None:
            return {}
        path = f"{run_dir(record['flow'], record['id'])}/result.json"
        try:
            data = self.ctx.store.read(tip, path, MAX_RESULT)
        except TooLarge:
            entry = self.ctx.store.lookup(tip, path)
            upstream["result_size"] = self.ctx.store.size(entry.oid) if entry else None
            return {}
        return {"upstream_result": data.decode("utf-8", "replace").strip()} if data is not None else {}

    def _was_chained(self, sha, upstream: str, downstream: str) -> bool:
        """Whether the flows commit `sha` (the one the upstream run ran with) had `downstream` after `upstream`."""
        if not isinstance(sha, str) or not sha:
            return False
        if sha not in self.chained:
            self.chained[sha] = self._pairs(sha)
            if len(self.chained) > 1000:
                self.chained = {sha: self.chained[sha]}
        return (upstream, downstream) in self.chained[sha]

    def _pairs(self, sha: str) -> frozenset:
        from puppemon.errors import PuppemonError
        from puppemon.project.manifest import MANIFEST_NAME, MAX_BYTES, parse

        deployment = self.deployment
        try:
            manifest = deployment.manifest if deployment and deployment.sha == sha else parse(
                self.ctx.store.read(sha, MANIFEST_NAME, MAX_BYTES) or b"")
        except (PuppemonError, KeyError, ValueError):   # TooLarge is a ValueError
            return frozenset()   # not a deploy that ran (or not in this mirror): it chained nothing
        return frozenset((u.flow, name) for name, flow in manifest.flows.items()
                         for u in (flow.trigger("after").upstreams if flow.trigger("after") else ()))
