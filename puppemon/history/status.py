"""Daemon status on the remote: `refs/puppemon/status/<daemon>`, overwritten (no history).

The daemon writes it (StatusPublisher: when something changed, at most every few
seconds, and a heartbeat about once a minute); `puppemon status` reads it back
(fetch_status, collect).
"""
from __future__ import annotations

import json
import logging
import os
import time
from datetime import datetime
from typing import Callable

from puppemon.formats import is_flow_name, parse_iso
from puppemon.gitstore import GitError, RemoteMissingRef, Store
from puppemon.history.placement import can_take
from puppemon.history.recorder import disk_words
from puppemon.history.records import RunStore, dump_json

log = logging.getLogger("puppemon")

STATUS_REFS = "refs/puppemon/status/"
FLOWS_TIP = "refs/puppemon/remote-flows"
HEARTBEAT = 60.0
MIN_INTERVAL = 5.0
STALE_AFTER = 180.0  # three missed heartbeats
LIVE_REFS = "refs/puppemon/live/"
# A daemon whose last heartbeat is older than gone_after(its status) is gone: `status` lists it so,
# `status --prune-gone` removes its refs, and failover between daemons uses the same bound.
GONE_AFTER = 300.0
GONE_HEARTBEATS = 3  # ... or this many of its heartbeats, which come every max(poll, HEARTBEAT) seconds
MAX_STATUS = 1024**2  # a status.json larger than this is not read (a daemon's is a few KiB)


class StatusPublisher:
    """Pushes one daemon's status.json to its status ref, only as often as it is worth it."""

    def __init__(self, store: Store, remote: str, name: str,
                 clock: Callable[[], float] = time.monotonic, heartbeat: float = HEARTBEAT) -> None:
        self.store, self.remote, self.ref, self.clock = store, remote, STATUS_REFS + name, clock
        self.name, self.heartbeat = name, heartbeat
        self._pushed: tuple[float, str] = (0.0, "")

    def publish(self, status: dict, final: bool = False, early: bool = False) -> bool:
        """Push `status` if it changed (at most every MIN_INTERVAL s), is due a heartbeat, or `final`; True
        when it was pushed. `early`: push it now, and let the next change go out at once all the same."""
        key = json.dumps({k: v for k, v in status.items() if k != "heartbeat"}, sort_keys=True)
        last_time, last_key = self._pushed
        now = self.clock()
        changed = key != last_key
        due = final or early or (changed and now - last_time >= MIN_INTERVAL) or now - last_time >= self.heartbeat
        if not due and not (changed and last_time == 0.0):
            return False
        try:
            tree = self.store.update_tree(None, {"status.json": (self.store.blob(dump_json(status)), 0o100644)})
            commit = self.store.commit(tree, [], f"status of {self.name}\n")
            self.store.push(self.remote, [f"+{commit}:{self.ref}"], timeout=30)
            self._pushed = (0.0, "") if early else (now, key)
            return True
        except OSError as exc:  # a full disk under the daemon's repository
            log.warning("status not written: %s", disk_words(exc))
        except GitError as exc:
            log.debug("status not pushed: %s", exc.message)
        return False


def fetch_status(store: Store, remote: str, branch: str = "flows") -> None:
    """Mirror the remote's status refs into refs/puppemon/status/* (stale ones removed) and its flows tip.

    Fetched into a scratch namespace first, so a daemon that is gone from the
    remote disappears here too, and a failed fetch leaves the last copy intact.
    """
    scratch = f"refs/puppemon/fetching-{os.getpid()}/"
    specs = [f"+{STATUS_REFS}*:{scratch}status/*", f"+refs/heads/{branch}:{scratch}flows"]
    try:
        try:
            store.fetch(remote, specs, timeout=60)
        except RemoteMissingRef:  # nothing pushed to flows yet
            store.fetch(remote, specs[:1], timeout=60)
        fetched = store.refs(scratch)
        for name in store.refs(STATUS_REFS):
            if f"{scratch}status/{name[len(STATUS_REFS):]}" not in fetched:
                store.delete_ref(name)
        for name, sha in fetched.items():
            rest = name[len(scratch):]
            if rest.startswith("status/"):
                store.force_ref(STATUS_REFS + rest[len("status/"):], sha)
        tip = fetched.get(f"{scratch}flows")
        if tip:
            store.force_ref(FLOWS_TIP, tip)
        else:
            store.delete_ref(FLOWS_TIP)
    finally:
        for name in store.refs(scratch):
            store.delete_ref(name)


def _time_or_none(value) -> bool:
    try:
        return value is None or isinstance(value, str) and (not value or parse_iso(value) is not None)
    except ValueError:
        return False


def readable(status) -> bool:
    """Whether a status.json has the shape `status` reads: anyone who can push may write one."""
    if not isinstance(status, dict) or not _time_or_none(status.get("heartbeat")):
        return False
    if not all(isinstance(status.get(k), (str, type(None))) for k in ("name", "host", "version", "state",
                                                                      "flows_commit")):
        return False
    if not all(isinstance(status.get(k), (int, type(None))) for k in ("pid", "unpublished")):
        return False
    if not isinstance(status.get("poll"), (int, float, type(None))) or not isinstance(status.get("once"),
                                                                                     (bool, type(None))):
        return False
    flows, in_flight = status.get("flows") or {}, status.get("in_flight") or []
    return (isinstance(flows, dict) and isinstance(in_flight, list)
            and all(is_flow_name(f) and isinstance(i, dict) and _time_or_none(i.get("next")) for f, i in flows.items())
            and all(isinstance(r, dict) and _time_or_none(r.get("started")) for r in in_flight))


def _seconds(value) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else 0.0


def heartbeat_every(status: dict) -> float:
    """How often the daemon of `status` heartbeats when nothing changes: HEARTBEAT, unless it published
    another period (`heartbeat_every`, PUPPEMON_HEARTBEAT: for tests and demos)."""
    return _seconds(status.get("heartbeat_every")) or HEARTBEAT


def labels_of(status: dict) -> tuple[str, ...]:
    """The labels a daemon advertises in its status (`--labels`), the strings of them only."""
    labels = status.get("labels")
    return tuple(x for x in labels if isinstance(x, str)) if isinstance(labels, list) else ()


def is_live(status: dict) -> bool:
    """Whether the daemon of `status` (as `statuses` reads it) may take runs now or at its next start:
    running, or started by a timer (`--once`), and not gone."""
    return not status.get("gone") and (status.get("state") != "stopped" or bool(status.get("once")))


def gone_after(status: dict) -> float:
    """Seconds without a heartbeat after which the daemon of `status` is gone: GONE_HEARTBEATS of its
    heartbeat periods (max(its published poll interval, its heartbeat period)), and never less than
    GONE_AFTER (five heartbeats: scaled with a shorter heartbeat period)."""
    beat = heartbeat_every(status)
    return max(GONE_AFTER * beat / HEARTBEAT, GONE_HEARTBEATS * max(_seconds(status.get("poll")), beat))


def next_due(status: dict) -> tuple[str, str] | None:
    """(the earliest next fire time a daemon published, its flow), or None."""
    times = sorted((info["next"], flow) for flow, info in (status.get("flows") or {}).items() if info.get("next"))
    return times[0] if times else None


def is_gone(status: dict, age: float | None, now: datetime) -> bool:
    """Whether the daemon of `status` stopped heartbeating for longer than gone_after; a --once daemon
    counts from the fire it is due next, when its timer should start it again."""
    bound = gone_after(status)
    if age is None:
        return True
    if status.get("once") and (due := next_due(status)):
        return age > bound and (now - parse_iso(due[0])).total_seconds() > bound
    return age > bound


def statuses(store: Store, now: datetime) -> tuple[list[dict], int]:
    """(each daemon's status.json, with its heartbeat's age and whether it is stale, as fetched by
    fetch_status; how many status refs could not be read)."""
    daemons, unreadable = [], 0
    for ref, sha in sorted(store.refs(STATUS_REFS).items()):
        try:
            data = store.read(sha, "status.json", MAX_STATUS)
            status = json.loads(data) if data is not None else None
        except (ValueError, KeyError, RecursionError, GitError):  # too large, a ref to a blob: not a daemon's
            status = None
        if not readable(status):
            unreadable += 1
            continue
        beat = parse_iso(status.get("heartbeat"))
        age = (now - beat).total_seconds() if beat else None
        status["heartbeat_age"] = round(age, 3) if age is not None else None
        status["stale"] = age is None or age > STALE_AFTER * heartbeat_every(status) / HEARTBEAT
        status["ref"] = ref
        status["gone_after"] = gone_after(status)
        status["gone"] = is_gone(status, age, now)
        daemons.append(status)
    return daemons, unreadable


def heartbeating(store: Store, now: datetime) -> list[dict]:
    """The daemons (as fetched by fetch_status) that may still be running: a fresh heartbeat, and no
    last status saying they stopped."""
    return [s for s in statuses(store, now)[0] if not s["stale"] and s.get("state") != "stopped"]


def collect(store: Store, runs: RunStore, now: datetime) -> tuple[str | None, list[dict], int]:
    """(the remote's flows tip, each daemon's status.json with what `status` works out from it, how many
    status refs could not be read)."""
    tip = store.ref(FLOWS_TIP)
    daemons, unreadable = statuses(store, now)
    live = [(str(d.get("name") or "?"), labels_of(d)) for d in daemons if is_live(d)]
    for status in daemons:
        status["flows_tip"] = tip
        status["up_to_date"] = bool(tip) and status.get("flows_commit") == tip
        flows = status.get("flows") or {}
        for flow, info in flows.items():
            last = runs.latest(flow)
            info["last_run"] = ({"id": last["id"], "status": last.get("status"), "started": last.get("started")}
                                if last else None)
            info["on"] = [name for name, labels in live if can_take(labels, runs_on_of(info))]
        status["flows"] = flows
    return tip, daemons, unreadable


def runs_on_of(info: dict) -> tuple[str, ...]:
    """The labels a flow needs, as a daemon's status says of it (`runs_on`), the strings of them only."""
    runs_on = info.get("runs_on")
    return tuple(x for x in runs_on if isinstance(x, str)) if isinstance(runs_on, list) else ()


def unplaced(daemons: list[dict]) -> dict[str, tuple[str, ...]]:
    """The flows no live daemon can take (as `collect` worked it out), each with the labels it needs,
    as the daemons up to date with the flows tip say (else any); none when no daemon is live."""
    if not any(is_live(d) for d in daemons):
        return {}
    current = [d for d in daemons if d.get("up_to_date")] or daemons
    found: dict[str, tuple[str, ...]] = {}
    for daemon in current:
        for flow, info in (daemon.get("flows") or {}).items():
            if not info.get("on") and flow not in found:
                found[flow] = runs_on_of(info)
    return dict(sorted(found.items()))


def prune_gone(store: Store, remote: str, status_refs: list[str]) -> list[str]:
    """Delete `status_refs` (refs/puppemon/status/<name>) and the daemons' live refs, where there are,
    from `remote` and here; the refs removed."""
    refs = list(status_refs)
    for name in (ref[len(STATUS_REFS):] for ref in status_refs):
        if store.fetch_optional(remote, LIVE_REFS + name, f"refs/puppemon/pruning/{name}"):
            refs.append(LIVE_REFS + name)
            store.delete_ref(f"refs/puppemon/pruning/{name}")
    if refs:
        store.push(remote, [f":{ref}" for ref in refs], timeout=60)
        for ref in refs:
            store.delete_ref(ref)
    return refs
