"""The other daemons on the remote, as their status refs show them: one name per live daemon, the
remote's layout, and failover.

- At start (`refuse_same_name`): a daemon whose `--name` is that of a live one (its status ref
  heartbeating within the gone bound, from another host or another live pid here) is refused.
  A restart after kill -9 (same host, the old pid dead) and a `--once` job after a status that
  says `stopped` are not.
- Each cycle (`cycle`): the remote's `control/format.json` is checked (history/layout.py: a
  layout this version does not know stops the daemon, which writes nothing more) and written
  once when the runs branch has none.
- Failover: about once a heartbeat period, the status refs (fetched by the cycle) are read; a daemon whose last
  heartbeat is older than its gone bound (history/status.py `gone_after`) is gone, and the runs
  it had in flight (its last status's `in_flight`) and the run requests it claimed (the last
  DAYS days) that have no record are recorded `crashed`, "daemon X stopped heartbeating". A
  claimed request that had not started is recorded crashed too, not run again: whether it ran
  is not known here, and a run twice is worse than a run reported lost (trigger it again).

Exactly once: the record of a run has a path fixed by its id, so when two live daemons record
the same gone daemon's run, or the gone daemon comes back (a partition, a restart) and records
its true end, the recorder's replay keeps the first pushed and drops the others (recorder.py
`_collides`). Each daemon looks at a gone daemon once per last heartbeat.

A run whose backend outlives its daemon (a Slurm job) is left to that daemon, which follows it on
when it comes back (daemon/recovery.py), while the job still runs: `adoptable` asks the backend
named in the in_flight entry (`outlives(handle)`); such a gone daemon is looked at again each
heartbeat period, and its run is recorded crashed once the job is over and the daemon still gone.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime
from typing import Callable, Iterator

from puppemon.daemon.ledger import Ledger
from puppemon.errors import PuppemonError
from puppemon.formats import RUN_ID, is_flow_name, parse_iso, utc_iso
from puppemon.gitstore import GitError, Store
from puppemon.history import layout
from puppemon.history.recorder import Recorder
from puppemon.history.records import RunContext, is_recorded, one_line
from puppemon.history.requests import (DAYS, MAX_SIZE, BadRequest, check_claim, check_request,
                                       recent_dirs)
from puppemon.history.status import STATUS_REFS, gone_after, readable, statuses

log = logging.getLogger("puppemon")
OWN = "refs/puppemon/peers/own"   # this daemon's name's status ref, fetched at start


def alive(pid) -> bool:
    """Whether a puppemon process `pid` runs on this machine (a pid reused by another program is not)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: alive
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return b"puppemon" in fh.read()
    except OSError:
        return True  # no /proc to ask: trust the pid


class Failover:
    """This daemon among the others: its name, the remote's layout, and failover (see the module)."""

    def __init__(self, store: Store, recorder: Recorder, ledger: Ledger, remote: str, name: str,
                 flows_branch: str, heartbeat: float, clock: Callable[[], datetime],
                 stop: Callable[[], None]) -> None:
        self.store, self.recorder, self.ledger, self.remote, self.name = store, recorder, ledger, remote, name
        self.flows_branch, self.heartbeat, self.clock, self.stop = flows_branch, heartbeat, clock, stop
        self.refused: str | None = None          # why this daemon stopped: a layout it does not know
        self._marked = False                     # control/format.json written (or found)
        self._looked = float("-inf")             # time.monotonic() of the last look at the status refs
        self._handled: dict[str, str | None] = {}   # gone daemon -> the last heartbeat it was handled for

    # -- at start ----------------------------------------------------------------
    def refuse_same_name(self) -> None:
        """PuppemonError when a live daemon already has this daemon's name (the remote unreachable: no
        check, as a daemon alone goes on through an outage)."""
        try:
            found = self.store.fetch_optional(self.remote, STATUS_REFS + self.name, OWN, timeout=30)
        except GitError as exc:
            log.debug("cannot ask %s for a daemon named %s: %s", self.remote, self.name, exc.message)
            return
        if not found:
            return
        try:
            status = json.loads(self.store.read(found, "status.json", 1024**2) or b"null")
        except (ValueError, RecursionError):
            status = None
        finally:
            self.store.delete_ref(OWN)
        if not readable(status) or status.get("state") == "stopped" or not status.get("heartbeat"):
            return
        age, bound = (self.clock() - parse_iso(status["heartbeat"])).total_seconds(), gone_after(status)
        host, pid = status.get("host"), status.get("pid")
        if age > bound or (host == socket.gethostname() and (pid == os.getpid() or not alive(pid))):
            return  # gone, or it was this machine's and its process is dead (a restart after kill -9)
        where = f"host {one_line(host, 80)}, pid {pid}" if host != socket.gethostname() else f"pid {pid} here"
        raise PuppemonError(f"a daemon named {self.name!r} is running ({where}, last heartbeat {age:.0f}s ago): "
                            f"give this one another --name, or stop that one (if it is dead, it is gone "
                            f"{bound - age:.0f}s from now)")

    # -- each cycle ----------------------------------------------------------------
    def cycle(self, reached: bool, flows: str | None) -> bool:
        """Check the remote's layout, write it once (when there are runs, or flows to run: `flows`, the
        flows tip), look at gone daemons; False when the daemon must stop (the runs branch is in a layout
        this version does not know: `refused` says so)."""
        try:
            layout.check(self.store, self.store.ref(self.recorder.tracking), f"runs on {self.remote}")
        except layout.LayoutError as exc:
            self.refuse(exc)
            return False
        if not reached:
            return True  # the remote was not fetched: nothing new to go by
        runs = self.store.ref(self.recorder.ref)
        if not self._marked and (runs or flows):
            self._marked = True
            try:
                if not runs or layout.missing(self.store, runs):
                    self.ledger.add(layout.files(), layout.MESSAGE)
            except (PuppemonError, GitError) as exc:  # a full disk: the next cycle tries again
                self._marked = False
                log.warning("%s not written: %s", layout.PATH, exc.message)
        if time.monotonic() - self._looked >= self.heartbeat:
            self._looked = time.monotonic()
            self.failover()
        return True

    def refuse(self, exc: layout.LayoutError) -> None:
        if self.refused is None:
            log.error("%s; stopping", exc.message)
            self.refused = exc.message
            self.stop()

    def publish(self) -> bool:
        """Publish the recorder's records (False when they could not go out), refusing as `cycle` does."""
        try:
            return self.recorder.publish()
        except layout.LayoutError as exc:
            self.refuse(exc)
            return False

    # -- failover --------------------------------------------------------------------
    def failover(self) -> None:
        """Record `crashed` the unrecorded runs of each daemon that is gone (once per last heartbeat), as the
        status refs the cycle fetched show them (daemon/peers.py fetches them with the flows tip)."""
        for status in statuses(self.store, self.clock())[0]:
            other = status["ref"][len(STATUS_REFS):]
            if other == self.name or not status["gone"]:
                continue
            if self._handled.get(other, "") == status.get("heartbeat"):
                continue
            self._handled[other] = status.get("heartbeat")
            if self.take_over(other, status):   # some of its runs go on where they run: look again later
                del self._handled[other]

    def take_over(self, other: str, status: dict) -> int:
        """Record `other`'s runs crashed; how many were left alone because they still run (a Slurm job)."""
        tip = self.store.ref(self.recorder.ref)
        beat = status.get("heartbeat") or "never"
        error = f"daemon {other} stopped heartbeating (last heartbeat {beat}); recorded by {self.name}"
        runs: dict[str, dict] = {}
        going: set[str] = set()
        for entry in status.get("in_flight") or []:
            run_id, flow = entry.get("run_id"), entry.get("flow")
            if isinstance(run_id, str) and adoptable(entry):
                going.add(run_id)
            elif isinstance(run_id, str) and RUN_ID.match(run_id) and is_flow_name(flow):
                trigger = entry.get("trigger") if isinstance(entry.get("trigger"), dict) else {"kind": "unknown"}
                runs[run_id] = {"flow": flow, "started": entry.get("started"), "trigger": trigger,
                                "scheduled": entry.get("scheduled")}
        for claim, body in self.claims(tip, other):
            if claim["run_id"] in going:
                continue
            by = one_line(body["by"], 100) if body.get("by") else None
            runs.setdefault(claim["run_id"], {"flow": body["flow"], "trigger": {"kind": "request", "by": by}})
            runs[claim["run_id"]].update(request=body["id"], params=body.get("params") or {})
        for run_id, info in sorted(runs.items()):
            if is_recorded(self.store, tip, run_id, info["flow"]) or self.ledger.waiting(run_id):
                continue
            ctx = RunContext(run_id, info["flow"], info["trigger"], _time(info.get("scheduled")),
                             info.get("params") or {}, status.get("flows_commit") or "", daemon=other,
                             request=info.get("request"))
            self.ledger.synthetic(ctx, "crashed", error, _time(info.get("started")) or self.clock(), self.clock())
            log.warning("%s: run %s recorded as crashed: daemon %s stopped heartbeating", info["flow"], run_id,
                        other)
        return len(going)

    def claims(self, tip: str | None, other: str) -> Iterator[tuple[dict, dict]]:
        """(claim, request) of the run requests `other` claimed in the last DAYS days at `tip`."""
        for base in recent_dirs(self.clock(), DAYS) if tip else ():
            names = {e.name for e in self.store.listdir(tip, base) if not e.is_tree}
            for name in sorted(n for n in names if n.endswith(".claim.json")):
                rid = name[:-len(".claim.json")]
                if f"{rid}.done.json" in names or f"{rid}.json" not in names:
                    continue
                try:
                    claim = check_claim(self.store.read(tip, f"{base}/{name}", MAX_SIZE) or b"", rid)
                    if claim["daemon"] != other:
                        continue
                    body = check_request(self.store.read(tip, f"{base}/{rid}.json", MAX_SIZE) or b"", rid)
                except (BadRequest, ValueError):  # not one a daemon could have served (TooLarge: ValueError)
                    continue
                if body["kind"] == "run":
                    yield claim, body


def in_flight_entry(active) -> dict:
    """A run in flight (daemon/queue.py Active) as the status lists it: what another daemon records of it
    if this one stops heartbeating."""
    pending = active.pending
    execution = active.execution
    backend = getattr(execution, "backend", None)   # an attempt that outlives its daemon (a Slurm job)
    return {"run_id": active.run_id, "flow": active.flow, "started": utc_iso(active.started),
            "trigger": pending.trigger, "scheduled": utc_iso(pending.scheduled),
            **({"paused": True} if active.pause.since is not None else {}),
            **({"backend": backend, "handle": execution.handle()} if backend else {})}


def _time(value) -> datetime | None:
    try:
        return parse_iso(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


def adoptable(entry: dict) -> bool:
    """Whether a gone daemon's run in flight still runs in a backend that outlives its daemon, to be
    followed there rather than recorded crashed: the backend named in the entry says so from its
    handle (`outlives(handle) -> bool`, an optional Backend method: slurm's asks squeue)."""
    name, handle = entry.get("backend"), entry.get("handle")
    if not isinstance(name, str) or not isinstance(handle, dict):
        return False
    from puppemon.run import backends

    try:
        outlives = getattr(backends.get(name), "outlives", None)
    except PuppemonError:
        return False
    return bool(outlives and outlives(handle))
