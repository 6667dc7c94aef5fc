"""Fire claims: each scheduled fire, catch-up and run on deploy runs on one daemon, when several could take it.

A fire has a deterministic key that every daemon computes alike: the flow and its scheduled
UTC time (`20261125T083000Z`), or `deploy-<flows sha>` for a run on deploy; its claim is the
file `claims/<yyyy>/<mm>/<dd>/<flow>/<key>.json` on the runs branch. A daemon commits its
claim and publishes it; the recorder's replay keeps the first claim pushed and drops the
later ones (the mechanism request claims use, daemon/request_server.py), so the daemon whose
claim the remote holds runs the fire and the others skip it, at INFO.

Only fires that live peers could take are claimed (daemon/peers.py decides); a daemon alone
on a flow runs its fires with no claim, as before: no push on its path. A run an event asked for
(`after:` an upstream run, daemon/chains.py: `Pending.event`) is claimed by a daemon alone too,
committed and not pushed on its own (it goes out with the next records): that claim is how a
restart, or a daemon joining later, knows the event was followed.

Once a claim is won, `overlap` and `concurrency` hold across daemons: the runs of the flow
that other live daemons have in flight are the claims on the tip that no record answers yet,
and the runs their statuses list in flight. Above the limit a clock fire is recorded
`skipped` (overlap: skip, or parallel at its concurrency); otherwise the run waits, and each
cycle looks again (`cycle`).
"""
from __future__ import annotations

import json
import logging
import queue
import threading
from datetime import datetime, timedelta, timezone
from typing import Callable

from puppemon.daemon.ledger import Ledger
from puppemon.daemon.peers import ALONE, WAIT, Peers
from puppemon.daemon.queue import Pending, RunQueue, busy_words, run_limit
from puppemon.formats import claim_path, new_id, utc_iso
from puppemon.errors import PuppemonError
from puppemon.gitstore import FILE, GitError, Store, TooLarge
from puppemon.history.recorder import Recorder
from puppemon.history.records import dump_json, is_recorded

log = logging.getLogger("puppemon")
UTC = timezone.utc
SCHEMA = 1
MAX_CLAIM = 64 * 1024   # a claim file larger than this is not one


class Taken(Exception):
    """The fire's claim is on the tip already."""


def _order(day: str, name: str) -> tuple[str, str]:
    """Where a claim file (`<key>.json` of `day`) falls among a flow's fires: earlier fires first, a fire
    between seconds (`...T083000.500Z`) after its second."""
    stem = name.removesuffix(".json")
    if stem.endswith("Z") and "." not in stem:
        stem = f"{stem[:-1]}.000Z"
    return day, stem


def _claim_of(pending: Pending) -> str:
    """The path of the claim file that says who runs `pending` (its first, when it writes several: they are
    committed together, so the remote keeps all of them or none)."""
    return next(iter(pending.claims)) if pending.claims else claim_path(pending.flow, *pending.fire)


class FireClaims:
    """Routes each fire: straight to the queue (alone), to a claim first, or nowhere (left to the others)."""

    def __init__(self, peers: Peers, recorder: Recorder, ledger: Ledger, store: Store, run_queue: RunQueue,
                 daemon: str, clock: Callable[[], datetime]) -> None:
        self.peers, self.recorder, self.ledger, self.store = peers, recorder, ledger, store
        self.queue, self.daemon, self.clock = run_queue, daemon, clock
        self.todo: queue.Queue[Pending | None] = queue.Queue()
        self.held: list[Pending] = []   # claimed, waiting for the flow's runs elsewhere (overlap: queue)
        self.lock = threading.Lock()    # over `held`
        self.thread: threading.Thread | None = None
        self._parsed: dict[str, tuple[str, str] | None] = {}   # claim blob -> (daemon, run id)

    def submit(self, pending: Pending) -> str | None:
        """Queue a fire's run if this daemon may (its run id), or claim it first; None when left to others."""
        deployment = self.queue.current()
        flow = deployment.manifest.flows.get(pending.flow) if deployment else None
        if flow is None:
            return self.queue.submit(pending)   # says why nothing runs
        mode, why = self.peers.decide(getattr(flow, "runs_on", None), pending.scheduled or self.clock())
        if mode == ALONE and not pending.claims:
            if pending.event is not None and not self._note(pending):
                return None
            return self.queue.submit(pending)
        if mode == WAIT and not pending.claims:   # (every daemon claims such a fire: the first push decides)
            log.info("%s: fire %s left to the other daemons (%s)", pending.flow, pending.fire[1], why)
            return None
        pending.run_id = pending.run_id or new_id(self.clock())
        if self.thread is None:
            self._claim([pending])      # driven one step at a time (in-process, --once): at once
        else:
            self.todo.put(pending)
        return pending.run_id

    def _note(self, pending: Pending) -> bool:
        """A daemon alone commits the claim of a run an event asked for (no push of its own: it goes out with
        the next records), so that no start of it, nor a daemon joining later, runs that event again."""
        pending.run_id = pending.run_id or new_id(self.clock())
        try:
            self.ledger.add(self._unless_taken(self._files(pending)), self._message(pending))
        except Taken:
            log.info("another daemon took %s at %s", pending.flow, pending.fire[1])
            return False
        except PuppemonError as exc:
            log.warning("%s: %s not run: its claim cannot be written: %s", pending.flow, pending.fire[1],
                        exc.message)
            return False
        return True

    def _body(self, p: Pending) -> dict:
        return {"schema": SCHEMA, "fire": p.fire[1], "flow": p.flow, "scheduled": utc_iso(p.scheduled),
                "daemon": self.daemon, "run_id": p.run_id, "time": utc_iso(self.clock())}

    def _files(self, p: Pending) -> dict[str, bytes]:
        """The claim files of `p`: its claim, or the several it writes (watched files), each with the claim's body."""
        body = self._body(p)
        return {path: dump_json({**body, **extra}) for path, extra in (p.claims or {}).items()} or \
            {claim_path(p.flow, *p.fire): dump_json(body)}

    def _message(self, p: Pending) -> str:
        return (f"claim {p.flow} {p.fire[1]} for {self.daemon}\n\nPuppemon-Flow: {p.flow}\n"
                f"Puppemon-Fire: {p.fire[1]}\nPuppemon-Claim: {self.daemon}\n")

    # -- the claim thread ------------------------------------------------------
    def start(self) -> None:
        self.thread = threading.Thread(target=self._loop, name="claims", daemon=True)
        self.thread.start()

    def close(self) -> None:
        if self.thread is not None:
            self.todo.put(None)
            self.thread.join()
            self.thread = None

    def _loop(self) -> None:
        while True:
            batch = [self.todo.get()]
            while not self.todo.empty():
                batch.append(self.todo.get())   # fires that came while the last claim went out: one push
            work = [p for p in batch if p is not None]
            try:
                if work:
                    self._claim(work)
            except Exception:  # noqa: BLE001 - the next fire claims again
                log.exception("unexpected error while claiming fires")
            if None in batch:
                return

    def _claim(self, batch: list[Pending]) -> None:
        """Commit the claims of `batch`, publish them, and start the runs whose claim the remote kept."""
        if self.queue.stopping:
            return
        written = []
        for p in batch:
            key = p.fire[1]
            try:
                commit = self.ledger.add(self._unless_taken(self._files(p)), self._message(p))
            except Taken:
                log.info("another daemon took %s at %s", p.flow, key)
                continue
            except PuppemonError as exc:
                log.warning("%s: fire %s not run: its claim cannot be written: %s", p.flow, key, exc.message)
                continue
            written.append((p, commit))
        if not written:
            return
        try:
            self.recorder.sync(push=True)
        except GitError as exc:
            for p, commit in reversed(written):
                self.recorder.withdraw(commit)
            log.warning("%s not run: %s could not reach the remote (%s)",
                        ", ".join(f"{p.flow} {p.fire[1]}" for p, _ in written),
                        "its claim" if len(written) == 1 else "their claims", exc.message)
            return
        tip = self.store.ref(self.recorder.tracking)
        for p, _ in written:
            if self._owner(tip, _claim_of(p)) != (self.daemon, p.run_id):
                log.info("another daemon took %s at %s", p.flow, p.fire[1])
                continue
            self._start(p, tip)

    def _unless_taken(self, files: dict[str, bytes]) -> Callable[[str | None], dict]:
        """The claim's change to the local tip it is committed on; Taken when that tip holds a claim of the
        fire already (fetched from the remote: written over, it would go out as a fast-forward)."""
        def change(tip: str | None) -> dict:
            if tip and any(self.store.lookup(tip, path) is not None for path in files):
                raise Taken(next(iter(files)))
            return {path: (self.store.blob(data), FILE) for path, data in files.items()}
        return change

    def _owner(self, tip: str | None, path: str) -> tuple[str, str] | None:
        """(daemon, run id) of the claim file at `path`, None when there is none or it is not one (anyone can
        push): cached by blob, as claims do not change."""
        entry = self.store.lookup(tip, path) if tip else None
        if entry is None or entry.is_tree:
            return None
        if entry.oid not in self._parsed:
            try:
                body = json.loads(self.store.read(tip, path, MAX_CLAIM) or b"")
                found = (body["daemon"], body["run_id"])
                self._parsed[entry.oid] = found if all(isinstance(x, str) for x in found) else None
            except (ValueError, KeyError, TypeError, RecursionError, TooLarge):
                self._parsed[entry.oid] = None
            if len(self._parsed) > 100_000:
                self._parsed.clear()
        return self._parsed.get(entry.oid)

    # -- overlap and concurrency across daemons ----------------------------------
    def _start(self, pending: Pending, tip: str | None) -> None:
        """A won claim: run it, unless the flow's runs elsewhere already fill its limit."""
        deployment = self.queue.current()
        flow = deployment.manifest.flows.get(pending.flow) if deployment else None
        limit = run_limit(flow) if flow is not None else None
        if limit is not None:
            elsewhere = self._elsewhere(tip, pending)   # (the queue holds to the limit with its own runs)
            if elsewhere and elsewhere + self.queue.count(pending.flow) >= limit:
                if pending.skippable and flow.overlap != "queue":
                    self._skip(pending, flow)
                else:
                    with self.lock:
                        self.held.append(pending)
                return
        self.queue.submit(pending)

    def _skip(self, pending: Pending, flow) -> None:
        why = busy_words(flow, elsewhere=True)
        log.info("%s: skipped (%s)", pending.flow, why)
        pending.deployment = self.queue.current()
        self.queue.skip(pending, why)

    def _elsewhere(self, tip: str | None, pending: Pending) -> int:
        """How many runs of the flow other live daemons have in flight or ahead of this one: their claims of
        earlier fires (today's and yesterday's) that no record answers, and what their statuses list in flight.

        Only earlier claims count, so two daemons that each hold a claimed run (overlap: queue) never wait
        for each other: the earliest fire goes first, on whichever daemon claimed it."""
        flow, runs = pending.flow, set()
        today = self.clock().astimezone(UTC)
        mine = _order(f"{pending.fire[0].astimezone(UTC):%Y/%m/%d}", f"{pending.fire[1]}.json")
        for day in (f"{today - timedelta(days=1):%Y/%m/%d}", f"{today:%Y/%m/%d}"):
            base = f"claims/{day}/{flow}"
            for entry in self.store.listdir(tip, base) if tip else []:
                owner = self._owner(tip, f"{base}/{entry.name}") if _order(day, entry.name) < mine else None
                if owner is not None and owner[0] != self.daemon and self.peers.is_live(owner[0]):
                    runs.add(owner[1])
        runs |= self.peers.in_flight(flow)
        return sum(1 for run_id in runs if not is_recorded(self.store, tip, run_id, flow))

    def cycle(self) -> None:
        """Start the held runs whose flow has room now (after the cycle's fetch of the runs tip)."""
        with self.lock:
            held, self.held = self.held, []
        tip = self.store.ref(self.recorder.tracking)
        for pending in held:
            if self.queue.stopping:
                return
            self._start(pending, tip)
