"""Run and cancel requests on the runs branch: writing them (CLI, HTTP) and serving them (daemon).

Layout, next to each other under the request's date::

    requests/<yyyy>/<mm>/<dd>/<id>.json        the request (kind run or cancel, who, when)
    requests/<yyyy>/<mm>/<dd>/<id>.claim.json  run requests: the daemon that took it and its run id
    requests/<yyyy>/<mm>/<dd>/<id>.done.json   cancel requests: which daemon acted, and how

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
import os
import threading
from datetime import datetime, timedelta, timezone
from puppemon.errors import PuppemonError
from puppemon.records import RUN_ID, dump_json, run_dir, run_files, run_message, synthetic_record, utc_iso

log = logging.getLogger("puppemon")

DAYS = 7
SCHEMA = 1


def new_request_id(now: datetime | None = None) -> str:
    """A request id, shaped like a run id: UTC time and random hex (`20261125T083000Z-7f3a9c`)."""
    now = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


def request_base(request_id: str) -> str:
    """`requests/<yyyy>/<mm>/<dd>/<id>`, dated by the id; add `.json`, `.claim.json` or `.done.json`."""
    match = RUN_ID.match(request_id)
    if not match:
        raise PuppemonError(f"{request_id!r} is not a request id (expected e.g. 20261125T083000Z-7f3a9c)")
    yyyy, mm, dd = match.groups()
    return f"requests/{yyyy}/{mm}/{dd}/{request_id}"


def who() -> str:
    from puppemon.snapshot import _user

    return _user()


def run_request(flow: str, params: dict, by: str, now: datetime, request_id: str | None = None) -> dict:
    return {"schema": SCHEMA, "id": request_id or new_request_id(now), "kind": "run", "flow": flow,
            "params": params, "by": by, "time": utc_iso(now)}


def cancel_request(run_id: str, by: str, now: datetime) -> dict:
    return {"schema": SCHEMA, "id": new_request_id(now), "kind": "cancel", "run_id": run_id,
            "by": by, "time": utc_iso(now)}


def request_message(body: dict) -> str:
    what = f"run {body['flow']}" if body["kind"] == "run" else f"cancel {body['run_id']}"
    return (f"request: {what} (by {body['by']})\n\nPuppemon-Request: {body['id']}\n"
            f"Puppemon-Request-Kind: {body['kind']}\n")


def request_files(body: dict) -> dict[str, bytes]:
    return {f"{request_base(body['id'])}.json": dump_json(body)}


def send(store, remote: str, body: dict, branch: str = "runs") -> None:
    """Commit a request on the local runs branch of `store` and push it to `remote`."""
    from puppemon.gitstore import GitError
    from puppemon.recorder import Recorder

    recorder = Recorder(store, remote=remote, branch=branch, author_name=body["by"])
    recorder.add(request_files(body), request_message(body))
    try:
        recorder.sync(push=True)
    except GitError as exc:
        raise PuppemonError(f"{exc.message}\nthe request {body['id']} is committed on the local "
                            f"{branch} branch and will go out with the next trigger or cancel") from None


def find_record(store, tip: str | None, run_id: str, flow: str | None = None) -> dict | None:
    """run.json of `run_id` at `tip` (looked up in `flow`, else in every flow), or None."""
    if not tip:
        return None
    flows = [flow] if flow else [e.name for e in store.listdir(tip, "runs") if e.is_tree]
    for name in flows:
        data = store.read(tip, f"{run_dir(name, run_id)}/run.json")
        if data is not None:
            return json.loads(data)
    return None


def read_claim(store, tip: str | None, request_id: str) -> dict | None:
    data = store.read(tip, f"{request_base(request_id)}.claim.json") if tip else None
    return json.loads(data) if data is not None else None


def recent_dirs(now: datetime, days: int = DAYS) -> list[str]:
    """Date directories under requests/ to look at: tomorrow (clock skew) back to `days` ago."""
    now = now.astimezone(timezone.utc)
    return [f"requests/{d:%Y}/{d:%m}/{d:%d}" for d in (now - timedelta(days=i) for i in range(-1, days))]


class RequestServer:
    """The daemon's hook that serves requests found on the runs branch (and the HTTP hook's requests)."""

    def __init__(self, days: int = DAYS) -> None:
        self.days = days
        self.submitted: set[str] = set()   # run ids started by this process
        self.settled: set[str] = set()     # request ids nothing more is to be done for
        self.lock = threading.Lock()

    # -- one cycle -------------------------------------------------------------
    def __call__(self, daemon) -> None:
        if daemon.current is None or daemon.stopping:
            return
        store, recorder = daemon.store, daemon.recorder
        claimed = False
        local = store.ref(recorder.ref)
        for base, names, rid in self._requests(store, local, daemon.clock()):
            if f"{rid}.claim.json" in names:
                continue  # a run request someone claimed: see below
            body = self._body(store, local, base, rid)
            if body is None:
                continue
            if body["kind"] == "run":
                self._claim(daemon, body)
                claimed = True
            elif body["kind"] == "cancel":
                if f"{rid}.done.json" in names:
                    self.settled.add(rid)
                else:
                    self._cancel(daemon, body)
        if claimed:
            daemon.publish()
        # Only a claim the remote holds counts: another daemon may have claimed first.
        remote = store.ref(recorder.tracking)
        local = store.ref(recorder.ref)
        for base, names, rid in self._requests(store, remote, daemon.clock()):
            if f"{rid}.claim.json" not in names:
                continue
            claim = json.loads(store.read(remote, f"{base}/{rid}.claim.json"))
            with self.lock:
                mine = claim.get("daemon") == daemon.s.name and claim.get("run_id") not in self.submitted
            if not mine or find_record(store, local, claim["run_id"], claim.get("flow")):
                self.settled.add(rid)
                continue
            body = self._body(store, remote, base, rid)
            if body is not None:
                self._start(daemon, body, claim)

    def _requests(self, store, tip, now):
        """(date dir, names in it, request id) of unsettled requests in the recent date dirs at `tip`."""
        if not tip:
            return
        for base in recent_dirs(now, self.days):
            names = {e.name for e in store.listdir(tip, base)}
            for name in sorted(names):
                if name.endswith(".json") and not name.endswith((".claim.json", ".done.json")):
                    rid = name[:-len(".json")]
                    if rid not in self.settled:
                        yield base, names, rid

    def _body(self, store, tip, base, rid) -> dict | None:
        try:
            body = json.loads(store.read(tip, f"{base}/{rid}.json"))
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
    def _claim(self, daemon, body: dict) -> None:
        from puppemon.runner import new_run_id

        now = daemon.clock()
        claim = {"schema": SCHEMA, "request": body["id"], "daemon": daemon.s.name,
                 "run_id": new_run_id(now), "flow": body["flow"], "time": utc_iso(now)}
        daemon.recorder.add({f"{request_base(body['id'])}.claim.json": dump_json(claim)},
                            f"claim request {body['id']} ({body['flow']}) for {daemon.s.name}\n\n"
                            f"Puppemon-Request: {body['id']}\nPuppemon-Claim: {daemon.s.name}\n")

    def _start(self, daemon, body: dict, claim: dict) -> None:
        from puppemon.daemon import Pending

        rid, run_id = body["id"], claim["run_id"]
        pending = Pending(body["flow"], {"kind": "request", "by": body.get("by")},
                          params=body.get("params") or {}, request=rid, run_id=run_id)
        deployment = daemon.current
        if body["flow"] not in deployment.manifest.flows:
            error = (f"request {rid}: no flow {body['flow']!r} in the deployed flows commit "
                     f"{deployment.sha[:7]} (flows: {', '.join(sorted(deployment.manifest.flows))})")
            log.warning("%s", error)
            record = synthetic_record(run_id, body["flow"], "failed", trigger=pending.trigger, error=error,
                                      started=daemon.clock(), params=pending.params,
                                      flows_commit=deployment.sha, source_commit=deployment.source_commit,
                                      daemon=daemon.s.name, request=rid)
            daemon.recorder.add(run_files(record, f"puppemon: {error}\n".encode()), run_message(record))
        elif daemon.submit(pending) is None:
            return  # stopping: the claim stays ours, and the next start serves it
        with self.lock:
            self.submitted.add(run_id)
        self.settled.add(rid)
        log.info("request %s (%s by %s): run %s", rid, body["flow"], body.get("by"), run_id)

    def serve_http(self, daemon, flow: str, params: dict, client: str) -> dict[str, str] | None:
        """Record a request already claimed by this daemon, and start its run now; None when stopping."""
        from puppemon.daemon import Pending
        from puppemon.runner import new_run_id

        now = daemon.clock()
        body = run_request(flow, params, f"http {client}", now)
        rid, run_id = body["id"], new_run_id(now)
        claim = {"schema": SCHEMA, "request": rid, "daemon": daemon.s.name, "run_id": run_id,
                 "flow": flow, "time": utc_iso(now)}
        if daemon.stopping:
            return None
        with self.lock:
            self.submitted.add(run_id)
        files = {**request_files(body), f"{request_base(rid)}.claim.json": dump_json(claim)}
        daemon.recorder.add(files, request_message(body).replace("\n\n", f"\n\nPuppemon-Claim: {daemon.s.name}\n", 1))
        started = daemon.submit(Pending(flow, {"kind": "http", "by": client}, params=params, request=rid,
                                        run_id=run_id))
        daemon.wake.set()  # publish the request soon, so history shows who asked
        if started is None:
            return None
        self.settled.add(rid)
        return {"run_id": run_id, "request_id": rid}

    # -- cancel requests -------------------------------------------------------
    def _cancel(self, daemon, body: dict) -> None:
        rid, run_id = body["id"], body["run_id"]
        outcome = None
        with daemon.lock:
            active = daemon.active.get(run_id)
            queued = next((p for p in daemon.pending if p.run_id == run_id), None)
            if active is not None:
                active.cancel.set()
                outcome = "cancelled"
            elif queued is not None:
                daemon.pending.remove(queued)
                outcome = "cancelled before it started"
        if queued is not None and active is None:
            self._record_unstarted(daemon, queued, rid)
        if outcome is None:
            record = find_record(daemon.store, daemon.store.ref(daemon.recorder.ref), run_id)
            if record is None:
                return  # not in flight here, not recorded: another daemon's, or not started yet
            outcome = f"already finished ({record['status']})"
        log.info("cancel request %s: run %s %s", rid, run_id, outcome)
        done = {"schema": SCHEMA, "request": rid, "run_id": run_id, "daemon": daemon.s.name,
                "outcome": outcome, "time": utc_iso(daemon.clock())}
        daemon.recorder.add({f"{request_base(rid)}.done.json": dump_json(done)},
                            f"cancel request {rid}: {run_id} {outcome}\n\nPuppemon-Request: {rid}\n")
        self.settled.add(rid)

    def _record_unstarted(self, daemon, p, rid: str) -> None:
        deployment = p.deployment or daemon.current
        error = f"cancelled before it started (cancel request {rid})"
        record = synthetic_record(p.run_id, p.flow, "cancelled", trigger=p.trigger, error=error,
                                  started=daemon.clock(), scheduled=p.scheduled, params=p.params,
                                  flows_commit=deployment.sha, source_commit=deployment.source_commit,
                                  daemon=daemon.s.name, request=p.request)
        daemon.recorder.add(run_files(record, f"puppemon: {error}\n".encode()), run_message(record))


def exit_code(record: dict) -> int:
    """The exit code `trigger --wait` ends with for a recorded run."""
    status = record.get("status")
    if status == "succeeded":
        return 0
    if status == "timed_out":
        return 124
    if status == "cancelled":
        return 130
    code = record.get("exit_code")
    return code if isinstance(code, int) and 0 < code < 256 else 1


def describe(record: dict) -> str:
    from puppemon.records import format_seconds

    return f"run {record['id']} ({record['flow']}): {record['status']} in {format_seconds(record['duration'])}"
