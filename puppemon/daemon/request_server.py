"""The daemon's side of run and cancel requests found on the runs branch (and of the HTTP hook's).

Exactly once: a daemon commits a claim and publishes it; the recorder's replay keeps
the first claim pushed and drops later ones, so only the daemon whose claim the
remote holds starts the run. A claimed run request is served when a run record names
it (run.json `request`); a daemon that finds its own published claim with no record
and no such run in flight (it stopped in between) starts that run again.

Anyone who can push to the remote can write a request, so every request and claim is
checked (history/requests.py `check_request`, `check_claim`) before any value of it is
used; one that fails is refused: a `<id>.done.json` with the reason, so no daemon reads
it again, and the cycle goes on with the others.

A cycle reads no more than what changed: for each date directory it keeps the tree it
last looked at (on the local and on the remote tip), and looks only at the requests
whose files changed since (a diff of the two trees) and at those it left undone (a
cancel waiting for its run, an error to try again). What it remembers is bounded by
the work not done yet, not by the number of requests of the day.

A cancel request is done when a daemon that has the run in flight (or queued) stops
it, or when the run is found already recorded; otherwise it waits. Only the last
`DAYS` date directories are read, so a request nobody can serve expires after that
and the cost of a cycle does not grow with history.
"""
from __future__ import annotations

import logging
import re
import threading
from datetime import datetime
from typing import Callable

from puppemon.daemon.deployer import Deployment
from puppemon.daemon.ledger import Ledger
from puppemon.daemon.queue import Pending, RunQueue
from puppemon.formats import RUN_ID, parse_iso, request_base, utc_iso
from puppemon.errors import PuppemonError
from puppemon.gitstore import Store, TooLarge
from puppemon.history.control import describe as describe_control
from puppemon.history.records import dump_json, find_record, is_recorded, one_line
from puppemon.history.requests import (DAYS, MAX_SIZE, SCHEMA, BadRequest, check_claim, check_request, recent_dirs,
                                       request_files, request_message, run_request)

log = logging.getLogger("puppemon")
# A file name a refusal can sit next to as `<name>.done.json` (any other is refused in memory only).
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")


class RequestServer:
    """Claims and serves run requests, and acts on cancel requests, once per daemon cycle."""

    def __init__(self, store: Store, refs: tuple[str, str], ledger: Ledger, queue: RunQueue,
                 current: Callable[[], Deployment | None], daemon: str, clock: Callable[[], datetime],
                 publish: Callable[[], None], soon: Callable[[], None],
                 paused: Callable[[str], dict | None] = lambda _flow: None,
                 takes: Callable[[str], bool] = lambda _flow: True, days: int = DAYS) -> None:
        self.store, (self.local_ref, self.remote_ref), self.ledger = store, refs, ledger
        self.queue, self.current, self.daemon, self.clock = queue, current, daemon, clock
        self.publish, self.soon, self.days, self.paused = publish, soon, days, paused
        self.takes = takes   # whether this daemon takes a flow (its labels against the flow's runs_on)
        self.submitted: set[str] = set()   # run ids started by this process and not recorded yet
        self.settled: set[str] = set()     # request ids nothing more is to be done for, until the remote shows them
        self.lock = threading.Lock()
        # run id -> the cancel request naming it, seen this cycle with the run neither here nor recorded
        self.cancels: dict[str, dict] = {}
        self._recorded: list[str] = []     # run ids recorded since the last cycle (`recorded`)
        # per pass ("local", "remote"): date dir -> (its tree when last looked at, request ids left to look at again)
        self._looked: dict[str, dict[str, tuple[str | None, frozenset[str]]]] = {"local": {}, "remote": {}}

    # -- one cycle -------------------------------------------------------------
    def cycle(self) -> None:
        with self.lock:  # before the tips are read, which hold these records: is_recorded says so from now on
            self.submitted.difference_update(self._recorded)
            self._recorded.clear()
        if self.current() is None or self.queue.stopping:
            return
        claimed = False
        self.cancels.clear()  # the cancels still waiting show again in this cycle's local pass
        local = self.store.ref(self.local_ref)
        for base, _names, rid in self._requests(local, "local", claimed=False):  # a claimed one: see below
            claimed = self._guarded(rid, self._serve_new, local, base, rid) or claimed
        if claimed:
            self.publish()
        # Only a claim the remote holds counts: another daemon may have claimed first.
        remote = self.store.ref(self.remote_ref)
        local = self.store.ref(self.local_ref)
        for base, _names, rid in self._requests(remote, "remote", claimed=True):
            self._guarded(rid, self._serve_claimed, remote, local, base, rid)

    def recorded(self, run_id: str) -> None:
        """The record of `run_id` is committed (any thread): the next cycle finds it on the tip."""
        with self.lock:
            self._recorded.append(run_id)

    def _guarded(self, rid: str, serve: Callable, *args) -> bool:
        """`serve(*args)`; an error is logged and the cycle goes on with the next request."""
        try:
            return bool(serve(*args))
        except PuppemonError as exc:
            log.warning("request %s: %s", one_line(rid, 100), exc.message)
            return False

    def _serve_new(self, tip: str, base: str, rid: str) -> bool:
        """Claim an unclaimed run request, or act on a cancel request; True when it claimed."""
        body = self._body(tip, base, rid)
        if body is None:
            return False
        if body["kind"] == "run":
            if not self.takes(body["flow"]):
                return False  # runs_on: left for a daemon with the labels (not claimed, not refused)
            self._claim(body)
            return True
        if body["kind"] == "cancel":
            self._cancel(body)
        else:
            self._pause_run(body)
        return False

    def _serve_claimed(self, remote: str, local: str, base: str, rid: str) -> None:
        """Start a run request whose claim on the remote is this daemon's and that nothing ran yet."""
        try:
            claim = check_claim(self._read(remote, f"{base}/{rid}.claim.json"), rid)
        except BadRequest as exc:
            self._refuse(base, rid, str(exc))
            return
        with self.lock:
            mine = claim["daemon"] == self.daemon and claim["run_id"] not in self.submitted
        if not mine or is_recorded(self.store, local, claim["run_id"], claim.get("flow")):
            self.settled.add(rid)
            return
        body = self._body(remote, base, rid)
        if body is not None:
            self._start(body, claim)

    def _requests(self, tip: str | None, which: str, claimed: bool):
        """(date dir, names of the request's files, request id) of the unsettled requests to look at in the
        recent date dirs at `tip`, claimed or not: those whose files changed since this pass last looked
        (`which`), and those it left unsettled then."""
        looked = self._looked[which]
        dirs = recent_dirs(self.clock(), self.days)
        for gone in set(looked) - set(dirs):
            del looked[gone]
        for base in dirs if tip else ():
            entry = self.store.lookup(tip, base)
            tree = entry.oid if entry is not None and entry.is_tree else None
            last, again = looked.get(base, (None, frozenset()))
            if tree == last and not again:
                continue
            left = set()
            for rid in sorted(again | self._changed(last, tree)):
                names = self._names(tree, rid)
                if rid in self.settled or f"{rid}.json" not in names or f"{rid}.done.json" in names:
                    # gone, or a cancel acted on, a request refused: not to be looked at again
                    self._forget(rid, which)
                    continue
                if (f"{rid}.claim.json" in names) != claimed:
                    continue  # the other pass's (a claim still to come shows in a later diff)
                yield base, names, rid
                if rid in self.settled:
                    self._forget(rid, which)
                else:
                    left.add(rid)
            looked[base] = (tree, frozenset(left))

    def _forget(self, rid: str, which: str) -> None:
        """A settled request seen by the remote pass, the last place it shows, is not kept in memory: its
        files do not change any more, so no diff brings it back (and if one did, it would be settled again)."""
        if which == "remote":
            self.settled.discard(rid)

    def _changed(self, last: str | None, tree: str | None) -> set[str]:
        """Ids of the requests whose entries differ between two trees of a date dir (an entry that is a
        directory, which anyone could push, differs where a file below it does)."""
        if tree is None or tree == last:
            return set()
        ids = set()
        for path, value in self.store.tree_changes(last, tree).items():
            name = path.split("/", 1)[0]
            if value is not None and name.endswith(".json"):
                ids.add(name[:-len(".json")].removesuffix(".claim").removesuffix(".done"))
        return ids

    def _names(self, tree: str | None, rid: str) -> set[str]:
        """Which of the files of request `rid` the date dir `tree` holds."""
        names = (f"{rid}.json", f"{rid}.claim.json", f"{rid}.done.json")
        return {n for n in names if tree is not None and self.store.lookup(tree, n) is not None}

    def _read(self, tip: str, path: str) -> bytes:
        """A request or claim file, its size checked before it is read."""
        try:
            data = self.store.read(tip, path, MAX_SIZE)
        except TooLarge:
            raise BadRequest(f"the file is larger than {MAX_SIZE // 1024} KiB") from None
        if data is None:
            raise BadRequest(f"{path.rsplit('/', 1)[-1]!r} is not a file")
        return data

    def _body(self, tip: str, base: str, rid: str) -> dict | None:
        """The request `rid`, checked; None when it was refused."""
        try:
            return check_request(self._read(tip, f"{base}/{rid}.json"), rid)
        except BadRequest as exc:
            self._refuse(base, rid, str(exc))
            return None

    def _refuse(self, base: str, rid: str, reason: str) -> None:
        """Record `rid` as refused (`<rid>.done.json` with the reason), so no daemon reads it again."""
        shown, reason = one_line(repr(rid), 80), one_line(reason)
        log.warning("refusing request %s in %s: %s", shown, base, reason)
        self.settled.add(rid)
        if not SAFE_NAME.match(rid):
            return  # no sibling file can be named after it: refused in memory (once per start)
        done = {"schema": SCHEMA, "request": rid, "daemon": self.daemon, "outcome": "refused",
                "reason": reason, "time": utc_iso(self.clock())}
        trailer = f"Puppemon-Request: {rid}\n" if RUN_ID.match(rid) else ""
        self.ledger.add({f"{base}/{rid}.done.json": dump_json(done)},
                        f"refuse request {shown}: {reason}\n\n{trailer}Puppemon-Refused-By: {self.daemon}\n")

    # -- run requests ----------------------------------------------------------
    def _claim_body(self, rid: str, run_id: str, flow: str) -> dict:
        return {"schema": SCHEMA, "request": rid, "daemon": self.daemon, "run_id": run_id, "flow": flow,
                "time": utc_iso(self.clock())}

    def _claim(self, body: dict) -> None:
        claim = self._claim_body(body["id"], body["id"], body["flow"])  # the request's id is its run's
        self.ledger.add({f"{request_base(body['id'])}.claim.json": dump_json(claim)},
                        f"claim request {body['id']} ({body['flow']}) for {self.daemon}\n\n"
                        f"Puppemon-Request: {body['id']}\nPuppemon-Claim: {self.daemon}\n")

    def _start(self, body: dict, claim: dict) -> None:
        rid, run_id = body["id"], claim["run_id"]
        by = one_line(body["by"], 100) if body.get("by") else None  # free text: one line in records and logs
        scheduled = parse_iso(body["scheduled"]) if body.get("scheduled") else None   # `puppemon backfill`
        pending = Pending(body["flow"], {"kind": "backfill" if scheduled else "request", "by": by},
                          scheduled=scheduled, params=body.get("params") or {}, request=rid, run_id=run_id)
        deployment = self.current()
        withdrawn = self.cancels.get(run_id)
        paused = self.paused(body["flow"]) if body["flow"] in deployment.manifest.flows else None
        if withdrawn is not None:  # a cancel came before the run could start: it never does
            pending.deployment = deployment
            self._withdraw(pending, withdrawn)
        elif paused is not None:
            # a paused flow refuses requests (as a disabled workflow refuses a dispatch); the record says so
            error = f"not run: flow {body['flow']!r} is {describe_control(paused)} (`puppemon resume` it first)"
            log.info("request %s: %s", rid, error)
            pending.deployment = deployment
            self.ledger.synthetic(pending.context(self.daemon), "skipped", error)
        elif body["flow"] not in deployment.manifest.flows:
            error = (f"request {rid}: no flow {body['flow']!r} in the deployed flows commit "
                     f"{deployment.sha[:7]} (flows: {', '.join(sorted(deployment.manifest.flows))})")
            log.warning("%s", error)
            pending.deployment = deployment
            self.ledger.synthetic(pending.context(self.daemon), "failed", error)
        elif not self.takes(body["flow"]):  # claimed before a deploy gave the flow labels this daemon has not
            error = (f"not run: flow {body['flow']!r} now needs labels this daemon ({self.daemon}) has not "
                     f"(runs_on in {deployment.sha[:7]}); trigger it again for a daemon that has them")
            log.warning("request %s: %s", rid, error)
            pending.deployment = deployment
            self.ledger.synthetic(pending.context(self.daemon), "failed", error)
        elif self.queue.submit(pending) is None:
            return  # stopping: the claim stays ours, and the next start serves it
        with self.lock:
            self.submitted.add(run_id)
        self.settled.add(rid)
        log.info("request %s (%s by %s): run %s", rid, body["flow"], by, run_id)

    def serve_http(self, flow: str, params: dict, client: str) -> dict[str, str] | None:
        """Record a request already claimed by this daemon, and start its run now; None when stopping.

        A run started at once has its request published with its record (one push for both); a run
        that waits for a slot has its request published soon (`soon`), so a clone finds it meanwhile."""
        now = self.clock()
        body = run_request(flow, params, f"http {client}", now)
        rid = run_id = body["id"]
        if self.queue.stopping:
            return None
        with self.lock:
            self.submitted.add(run_id)
        self.settled.add(rid)  # before it can show on a tip: no pass serves it
        claim = self._claim_body(rid, run_id, flow)
        files = {**request_files(body), f"{request_base(rid)}.claim.json": dump_json(claim)}
        self.ledger.add(files, request_message(body).replace("\n\n", f"\n\nPuppemon-Claim: {self.daemon}\n", 1))
        started = self.queue.submit(Pending(flow, {"kind": "http", "by": client}, params=params, request=rid,
                                            run_id=run_id))
        if started is None:
            return None
        if self.queue.queued(run_id):
            self.soon()
        return {"id": run_id, "run_id": run_id, "request_id": rid}

    # -- cancel requests -------------------------------------------------------
    def _cancel(self, body: dict) -> None:
        run_id = body["run_id"]
        outcome, withdrawn = self.queue.cancel(run_id)
        if withdrawn is not None:
            self._withdraw(withdrawn, body)
            return
        if outcome is None:
            local = self.store.ref(self.local_ref)
            record = find_record(self.store, local, run_id)
            if record is None and not is_recorded(self.store, local, run_id):
                # not in flight here, not recorded: another daemon's, or not started yet (a claim of this
                # daemon's that the remote pass is to start looks here first: `_start`)
                self.cancels[run_id] = body
                return
            outcome = f"already finished ({one_line(record['status'], 40) if record else 'unreadable record'})"
        self._done(body, outcome)

    def _withdraw(self, pending: Pending, cancel: dict) -> None:
        """Record a run that had not started `cancelled` (it never starts), and the cancel done."""
        error = f"withdrawn before it started (cancel request {cancel['id']})"
        self.ledger.synthetic(pending.context(self.daemon), "cancelled", error)
        self._done(cancel, "withdrawn before it started")

    def _done(self, body: dict, outcome: str) -> None:
        """Mark a cancel, pause or resume request done (`<id>.done.json`) with what it did."""
        rid, run_id, kind = body["id"], body["run_id"], body["kind"]
        log.info("%s request %s: run %s %s", kind, rid, run_id, outcome)
        done = {"schema": SCHEMA, "request": rid, "run_id": run_id, "daemon": self.daemon,
                "outcome": outcome, "time": utc_iso(self.clock())}
        self.ledger.add({f"{request_base(rid)}.done.json": dump_json(done)},
                        f"{kind} request {rid}: {run_id} {outcome}\n\nPuppemon-Request: {rid}\n")
        self.settled.add(rid)
        if kind == "cancel":
            self.cancels.pop(run_id, None)

    # -- pause and resume requests (a run in flight) -----------------------------
    def _pause_run(self, body: dict) -> None:
        """Freeze a run in flight here (`pause --run`) or let it go on; done when acted on or when the run
        is recorded already, else left waiting (another daemon's run, or not started yet)."""
        outcome = self.queue.pause(body["run_id"], body["kind"] == "pause")
        if outcome is None:
            if self.queue.queued(body["run_id"]):
                return  # not started yet: acted on once it runs
            if not is_recorded(self.store, self.store.ref(self.local_ref), body["run_id"]):
                return
            outcome = "already finished"
        self._done(body, outcome)
