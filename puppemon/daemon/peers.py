"""The other daemons on this remote, as their status refs show them, and what they mean for a fire.

Each cycle fetches every daemon's status ref with the flows tip (one fetch). A peer is
live when it did not say it stopped and its heartbeat is within history/status.py's
`gone_after` bound, reckoned at the time of the last fetch that succeeded (so while the
remote cannot be reached, the daemons last seen stay as they were: a daemon that knew
others does not start running their fires unclaimed because it lost sight of them).

For a fire of a flow, `decide` answers one of:
- "alone": no live peer can take the flow (placement.can_take with the labels its status
  advertises): run it with no claim, as a daemon alone always did;
- "claim": live peers can take it, and each has acknowledged this daemon (its status lists
  this daemon's name with the start time of this very process) since before the fire's
  time: claim it first (daemon/claims.py);
- "wait": leave it to the others for now: this daemon's own status has not reached the
  remote and been looked at since (so it cannot know who else is there), or a peer that can
  take the flow has not acknowledged it yet and may be running that flow's fires unclaimed.

docs/ARCHITECTURE.md ("Several daemons") gives the whole protocol and its failure cases.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Callable, Iterable

from puppemon.formats import utc_iso
from puppemon.gitstore import GitError, Store
from puppemon.history.placement import can_take
from puppemon.history.status import FLOWS_TIP, fetch_status, labels_of, statuses

log = logging.getLogger("puppemon")

ALONE, CLAIM, WAIT = "alone", "claim", "wait"


def _known(status: dict) -> dict:
    peers = status.get("peers")
    return peers if isinstance(peers, dict) else {}


class Peers:
    """This daemon's view of the others, refreshed after each fetch of the status refs (any thread reads it)."""

    def __init__(self, store: Store, remote: str, branch: str, name: str, started: datetime,
                 clock: Callable[[], datetime], announce: Callable[[], bool]) -> None:
        self.store, self.remote, self.branch, self.name, self.clock = store, remote, branch, name, clock
        self.announce = announce        # push this daemon's status now: True when it went out
        self.me = utc_iso(started)      # what a peer's status names this daemon with, once it has seen it
        self.lock = threading.Lock()
        self.live: dict[str, dict] = {}          # name -> status, of the live peers at the last fetch
        self.acked: dict[str, datetime] = {}     # name -> when it was first seen acknowledging this daemon
        self.ready = False    # a fetch has looked at the remote after this daemon's status reached it
        self.status_out = False   # this process's status reached the remote

    def fetch(self) -> str | None:
        """Fetch every daemon's status ref and the flows tip (one fetch), and look at them; the flows tip.
        GitError when the remote cannot be reached."""
        after_own_status = self.status_out  # read before the fetch begins
        fetch_status(self.store, self.remote, self.branch)
        known = self.advertised()
        self.refresh(after_own_status)
        if self.advertised() != known and self.status_out:
            self.pushed(self.announce())  # a daemon came or went: say so now, so a newcomer waits no longer
        return self.store.ref(FLOWS_TIP)

    def pushed(self, done: bool) -> None:
        """This daemon's status was pushed (`done`), or not."""
        self.status_out = self.status_out or done

    def introduce(self) -> None:
        """Before the first fire: put this daemon's status on the remote, then look at who else is there.
        Whoever looks second sees the other."""
        try:
            self.pushed(self.announce())
            if self.status_out:
                self.fetch()
        except GitError as exc:
            log.warning("cannot fetch from %s: %s", self.remote, exc.message)

    def refresh(self, after_own_status: bool) -> None:
        """Read the status refs just fetched; `after_own_status`: the fetch began after this process's status
        was on the remote (so every daemon that was already there shows in it)."""
        now = self.clock()
        live = {s["name"]: s for s in statuses(self.store, now)[0]
                if isinstance(s.get("name"), str) and s["name"] != self.name
                and not s["gone"] and s.get("state") != "stopped"}
        with self.lock:
            for name in list(self.acked):
                if name not in live or _known(live[name]).get(self.name) != self.me:
                    del self.acked[name]
            for name, status in live.items():
                if _known(status).get(self.name) == self.me:
                    self.acked.setdefault(name, now)
            self.live = live
            self.ready = self.ready or after_own_status

    def advertised(self) -> dict[str, str | None]:
        """For this daemon's status: the live peers it knows (name -> their start time), which it claims for."""
        with self.lock:
            return {name: s.get("started") for name, s in sorted(self.live.items())}

    def able(self, runs_on: Iterable[str] | None) -> list[str]:
        """The live peers that can take a flow asking for `runs_on`."""
        with self.lock:
            return [n for n, s in sorted(self.live.items()) if can_take(labels_of(s), runs_on)]

    def decide(self, runs_on: Iterable[str] | None, moment: datetime) -> tuple[str, str]:
        """(ALONE, CLAIM or WAIT, why: for a log line) for a fire at `moment` of a flow asking for `runs_on`."""
        with self.lock:
            if not self.ready:
                return WAIT, "this daemon's status has not reached the remote yet"
            able = [n for n, s in sorted(self.live.items()) if can_take(labels_of(s), runs_on)]
            for name in able:
                since = self.acked.get(name)
                if since is None or moment <= since:
                    return WAIT, f"daemon {name} has not seen this daemon yet"
            return (CLAIM, "") if able else (ALONE, "")

    def is_live(self, name: str) -> bool:
        with self.lock:
            return name in self.live

    def in_flight(self, flow: str) -> set[str]:
        """Run ids of `flow` that live peers' statuses list in flight."""
        with self.lock:
            return {r["run_id"] for s in self.live.values() for r in (s.get("in_flight") or [])
                    if isinstance(r, dict) and r.get("flow") == flow and isinstance(r.get("run_id"), str)}
