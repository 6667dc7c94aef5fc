"""The daemon's side of run and cancel requests found on the runs branch (and of the HTTP hook's).

Exactly once: a daemon commits a claim and publishes it; the recorder's replay keeps
the first claim pushed and drops later ones, so only the daemon whose claim the
remote holds starts the run. A claimed run request is served when a run record names
it (run.json `request`); a daemon that finds its own published claim with no record
and no such run in flight (it stopped in between) starts that run again.

A cancel request is done when a daemon that has the run in flight (or queued) stops
it, or when the run is found already recorded; otherwise it waits. Only the last
`DAYS` date directories are read, so a request nobody can serve expires after that
and the cost of a cycle does not grow with history.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Callable

from puppemon.daemon.deployer import Deployment
from puppemon.daemon.ledger import Ledger
from puppemon.daemon.queue import Pending, RunQueue
from puppemon.formats import RUN_ID, new_id, request_base, utc_iso
from puppemon.gitstore import Store
from puppemon.history.records import dump_json, find_record
from puppemon.history.requests import DAYS, SCHEMA, recent_dirs, request_files, request_message, run_request

log = logging.getLogger("puppemon")


class RequestServer:
    """Claims and serves run requests, and acts on cancel requests, once per daemon cycle."""

    def __init__(self, store: Store, refs: tuple[str, str], ledger: Ledger, queue: RunQueue,
                 current: Callable[[], Deployment | None], daemon: str, clock: Callable[[], datetime],
                 publish: Callable[[], None], wake: Callable[[], None], days: int = DAYS) -> None:
        self.store, (self.local_ref, self.remote_ref), self.ledger = store, refs, ledger
        self.queue, self.current, self.daemon, self.clock = queue, current, daemon, clock
        self.publish, self.wake, self.days = publish, wake, days
        self.submitted: set[str] = set()   # run ids started by this process
        self.settled: set[str] = set()     # request ids nothing more is to be done for
        self.lock = threading.Lock()

    # -- one cycle -------------------------------------------------------------
    def cycle(self) -> None:
        if self.current() is None or self.queue.stopping:
            return
        store = self.store
        claimed = False
        local = store.ref(self.local_ref)
        for base, names, rid in self._requests(local):
            if f"{rid}.claim.json" in names:
                continue  # a run request someone claimed: see below
            body = self._body(local, base, rid)
            if body is None:
                continue
            if body["kind"] == "run":
                self._claim(body)
                claimed = True
            elif body["kind"] == "cancel":
                if f"{rid}.done.json" in names:
                    self.settled.add(rid)
                else:
                    self._cancel(body)
        if claimed:
            self.publish()
        # Only a claim the remote holds counts: another daemon may have claimed first.
        remote = store.ref(self.remote_ref)
        local = store.ref(self.local_ref)
        for base, names, rid in self._requests(remote):
            if f"{rid}.claim.json" not in names:
                continue
            claim = json.loads(store.read(remote, f"{base}/{rid}.claim.json"))
            with self.lock:
                mine = claim.get("daemon") == self.daemon and claim.get("run_id") not in self.submitted
            if not mine or find_record(store, local, claim["run_id"], claim.get("flow")):
                self.settled.add(rid)
                continue
            body = self._body(remote, base, rid)
            if body is not None:
                self._start(body, claim)

    def _requests(self, tip):
        """(date dir, names in it, request id) of unsettled requests in the recent date dirs at `tip`."""
        if not tip:
            return
        for base in recent_dirs(self.clock(), self.days):
            names = {e.name for e in self.store.listdir(tip, base)}
            for name in sorted(names):
                if name.endswith(".json") and not name.endswith((".claim.json", ".done.json")):
                    rid = name[:-len(".json")]
                    if rid not in self.settled:
                        yield base, names, rid

    def _body(self, tip, base, rid) -> dict | None:
        try:
            body = json.loads(self.store.read(tip, f"{base}/{rid}.json"))
            if body.get("kind") not in ("run", "cancel") or body.get("id") != rid:
                raise ValueError(f"kind {body.get('kind')!r}")
            if body["kind"] == "run" and not (isinstance(body.get("flow"), str) and
                                              isinstance(body.get("params", {}), dict)):
                raise ValueError("no flow, or params that are not an object")
            if body["kind"] == "cancel" and not RUN_ID.match(str(body.get("run_id"))):
                raise ValueError("no run id")
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring request %s/%s.json: not a valid request (%s)", base, rid, exc)
            self.settled.add(rid)
            return None
        return body

    # -- run requests ----------------------------------------------------------
    def _claim_body(self, rid: str, run_id: str, flow: str) -> dict:
        return {"schema": SCHEMA, "request": rid, "daemon": self.daemon, "run_id": run_id, "flow": flow,
                "time": utc_iso(self.clock())}

    def _claim(self, body: dict) -> None:
        claim = self._claim_body(body["id"], new_id(self.clock()), body["flow"])
        self.ledger.add({f"{request_base(body['id'])}.claim.json": dump_json(claim)},
                        f"claim request {body['id']} ({body['flow']}) for {self.daemon}\n\n"
                        f"Puppemon-Request: {body['id']}\nPuppemon-Claim: {self.daemon}\n")

    def _start(self, body: dict, claim: dict) -> None:
        rid, run_id = body["id"], claim["run_id"]
        pending = Pending(body["flow"], {"kind": "request", "by": body.get("by")},
                          params=body.get("params") or {}, request=rid, run_id=run_id)
        deployment = self.current()
        if body["flow"] not in deployment.manifest.flows:
            error = (f"request {rid}: no flow {body['flow']!r} in the deployed flows commit "
                     f"{deployment.sha[:7]} (flows: {', '.join(sorted(deployment.manifest.flows))})")
            log.warning("%s", error)
            pending.deployment = deployment
            self.ledger.synthetic(pending.context(self.daemon), "failed", error)
        elif self.queue.submit(pending) is None:
            return  # stopping: the claim stays ours, and the next start serves it
        with self.lock:
            self.submitted.add(run_id)
        self.settled.add(rid)
        log.info("request %s (%s by %s): run %s", rid, body["flow"], body.get("by"), run_id)

    def serve_http(self, flow: str, params: dict, client: str) -> dict[str, str] | None:
        """Record a request already claimed by this daemon, and start its run now; None when stopping."""
        now = self.clock()
        body = run_request(flow, params, f"http {client}", now)
        rid, run_id = body["id"], new_id(now)
        if self.queue.stopping:
            return None
        with self.lock:
            self.submitted.add(run_id)
        claim = self._claim_body(rid, run_id, flow)
        files = {**request_files(body), f"{request_base(rid)}.claim.json": dump_json(claim)}
        self.ledger.add(files, request_message(body).replace("\n\n", f"\n\nPuppemon-Claim: {self.daemon}\n", 1))
        started = self.queue.submit(Pending(flow, {"kind": "http", "by": client}, params=params, request=rid,
                                            run_id=run_id))
        self.wake()  # publish the request soon, so history shows who asked
        if started is None:
            return None
        self.settled.add(rid)
        return {"run_id": run_id, "request_id": rid}

    # -- cancel requests -------------------------------------------------------
    def _cancel(self, body: dict) -> None:
        rid, run_id = body["id"], body["run_id"]
        outcome, withdrawn = self.queue.cancel(run_id)
        if withdrawn is not None:
            error = f"cancelled before it started (cancel request {rid})"
            self.ledger.synthetic(withdrawn.context(self.daemon), "cancelled", error)
        if outcome is None:
            record = find_record(self.store, self.store.ref(self.local_ref), run_id)
            if record is None:
                return  # not in flight here, not recorded: another daemon's, or not started yet
            outcome = f"already finished ({record['status']})"
        log.info("cancel request %s: run %s %s", rid, run_id, outcome)
        done = {"schema": SCHEMA, "request": rid, "run_id": run_id, "daemon": self.daemon,
                "outcome": outcome, "time": utc_iso(self.clock())}
        self.ledger.add({f"{request_base(rid)}.done.json": dump_json(done)},
                        f"cancel request {rid}: {run_id} {outcome}\n\nPuppemon-Request: {rid}\n")
        self.settled.add(rid)

