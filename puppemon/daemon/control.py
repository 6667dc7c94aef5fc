"""Which flows are paused, as the daemon reads it from its runs tip each cycle (history/control.py).

A cycle costs one tree lookup when nothing changed: the `control` tree's oid is compared with
the one last read. While a flow is paused, every run its triggers ask for (clock fires, catch-up,
deploys) is held: not run, not recorded one by one; the daemon logs the pause once. Requests
are the request server's (daemon/request_server.py): it records them `skipped`, saying why.

What it last read and the last fire it held per flow are kept in the state directory
(control.json), so that a resume is seen as one across restarts and `--once` runs: a
`resume --catch-up` then gets ONE run for the fires missed while paused (as systemd's
Persistent=true does); a plain resume gets none.
"""
from __future__ import annotations

import json
import logging
import threading
from datetime import datetime
from typing import Callable

from puppemon.daemon.journal import StateDir, write_atomic
from puppemon.daemon.queue import Pending
from puppemon.formats import fire_key, parse_iso, utc_iso
from puppemon.gitstore import Store
from puppemon.history.control import control_tree, describe, read_states
from puppemon.history.records import one_line

log = logging.getLogger("puppemon")
UNREAD = "unread"   # never a tree oid: the first refresh reads


class Controls:
    """The control state of the runs tip, and what it asks of the runs this daemon would start."""

    def __init__(self, store: Store, state: StateDir, clock: Callable[[], datetime]) -> None:
        self.store, self.clock = store, clock
        self.file = state.path / "control.json"
        self.tree: str | None = UNREAD
        saved = self._load()
        self.states: dict[str, dict] = saved.get("seen", {})   # as last read (the baseline for a resume)
        self.missed: dict[str, str] = saved.get("missed", {})  # flow -> the last fire held while paused
        self.lock = threading.Lock()
        self.first = True   # the first read of this process logs every paused flow, once

    def _load(self) -> dict:
        try:
            saved = json.loads(self.file.read_text())
        except (OSError, ValueError):
            return {}
        ok = isinstance(saved, dict) and all(isinstance(saved.get(k, {}), dict) for k in ("seen", "missed"))
        return saved if ok else {}

    def _save(self) -> None:
        try:
            write_atomic(self.file, json.dumps({"seen": self.states, "missed": self.missed}).encode())
        except OSError as exc:  # a full disk: the state is read again from the runs tip at the next start
            log.warning("cannot save %s: %s", self.file, exc)

    def refresh(self, tip: str | None) -> list[Pending]:
        """Read the control state at `tip` when it changed; the catch-up runs of the flows resumed with
        `--catch-up` since the last read (one each, for the last fire held while paused)."""
        with self.lock:   # the loop and a dashboard's pause may both read it: one at a time
            return self._refresh(tip)

    def _refresh(self, tip: str | None) -> list[Pending]:
        tree = control_tree(self.store, tip)
        if tree == self.tree:
            return []
        self.tree = tree
        states = read_states(self.store, tip)
        runs = []
        for flow, state in states.items():
            old = self.states.get(flow)
            if state["paused"]:
                if self.first or old is None or not old["paused"] or old.get("time") != state.get("time"):
                    log.info("%s is %s: its triggers start no run until it is resumed", flow,
                             describe(state))
                continue
            missed = self.missed.pop(flow, None)
            if old is not None and old["paused"]:
                by = one_line(state.get("by") or "?", 100)
                log.info("%s was resumed by %s%s", flow, by, " with catch-up" if state.get("catch_up") else "")
                if state.get("catch_up") and missed:
                    moment = parse_iso(missed)  # claimed as the fire it stands for: once across daemons
                    runs.append(Pending(flow, {"kind": "catchup", "by": f"resume --catch-up by {by}"},
                                        scheduled=moment, skippable=True, fire=(moment, fire_key(moment))))
        self.first = False
        self.states = states
        self._save()
        return runs

    def paused(self, flow: str) -> dict | None:
        """The state of `flow` when it is paused, else None."""
        with self.lock:
            state = self.states.get(flow)
            return state if state is not None and state["paused"] else None

    def hold(self, pending: Pending) -> bool:
        """True when `pending`'s flow is paused: it is not to run (its fire time is kept for a catch-up)."""
        with self.lock:
            state = self.states.get(pending.flow)
            if state is None or not state["paused"]:
                return False
            if pending.scheduled is not None:
                self.missed[pending.flow] = utc_iso(pending.scheduled)
                self._save()
        log.debug("%s is paused: %s not run", pending.flow, pending.trigger.get("kind"))
        return True

    def summary(self) -> dict[str, dict]:
        """The paused flows and their states, for the status ref."""
        with self.lock:
            return {flow: state for flow, state in self.states.items() if state["paused"]}
