"""Live log tails on the remote: `refs/puppemon/live/<daemon>`, overwritten (no history).

While runs are in flight, a daemon (daemon/live.py) publishes for each of them
`<run-id>.log`, the last TAIL bytes of its redacted output, and `<run-id>.json`
(flow, started, and `total`, the bytes of output so far: the tail starts at
`total - len(tail)`, so a follower can tell what it has printed already and
what it missed). The ref goes when no run is in flight. `logs -f` and
`trigger --wait` read it (fetch_live, read_tail) with no inbound connection.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from puppemon.formats import RUN_ID
from puppemon.gitstore import GitError, RemoteMissingRef, Store
from puppemon.history.records import dump_json

LIVE_REFS = "refs/puppemon/live/"
TAIL = 64 * 1024
MAX_META = 64 * 1024


@dataclass
class Tail:
    """What a live ref says of one run in flight."""

    run_id: str
    flow: str
    started: str | None
    total: int      # bytes of (redacted) output the run has written so far
    data: bytes     # the last of them

    @property
    def start(self) -> int:
        return self.total - len(self.data)


def tail_files(tails: list[Tail], daemon: str) -> dict[str, bytes]:
    """The files of a live ref's tree."""
    files = {}
    for tail in tails:
        meta = {"schema": 1, "run_id": tail.run_id, "flow": tail.flow, "started": tail.started,
                "daemon": daemon, "total": tail.total, "start": tail.start}
        files[f"{tail.run_id}.json"] = dump_json(meta)
        files[f"{tail.run_id}.log"] = tail.data
    return files


def fetch_live(store: Store, remote: str, also: list[str] = ()) -> None:
    """Mirror the remote's live refs into refs/puppemon/live/* (gone ones removed), fetching the
    refspecs `also` in the same round trip. A failed fetch raises GitError and leaves the last copy."""
    scratch = f"refs/puppemon/fetching-live-{os.getpid()}/"
    specs = [f"+{LIVE_REFS}*:{scratch}*", *also]
    try:
        try:
            store.fetch(remote, specs, timeout=60)
        except RemoteMissingRef:  # one of `also` is not there (no runs branch yet)
            store.fetch(remote, specs[:1], timeout=60)
        fetched = store.refs(scratch)
        for name in store.refs(LIVE_REFS):
            if scratch + name[len(LIVE_REFS):] not in fetched:
                store.delete_ref(name)
        for name, sha in fetched.items():
            store.force_ref(LIVE_REFS + name[len(scratch):], sha)
    finally:
        for name in store.refs(scratch):
            store.delete_ref(name)


def _meta(store: Store, sha: str, run_id: str) -> dict | None:
    try:
        data = store.read(sha, f"{run_id}.json", MAX_META)
        meta = json.loads(data) if data is not None else None
    except (ValueError, GitError, RecursionError):  # anyone who can push may write a live ref
        return None
    if not (isinstance(meta, dict) and isinstance(meta.get("total"), int) and isinstance(meta.get("flow"), str)):
        return None
    return meta


def read_tail(store: Store, run_id: str) -> Tail | None:
    """The live tail of run `run_id`, as fetch_live brought it; None when no daemon publishes one."""
    for _name, sha in sorted(store.refs(LIVE_REFS).items()):
        meta = _meta(store, sha, run_id)
        if meta is None:
            continue
        try:
            data = store.read(sha, f"{run_id}.log", TAIL) or b""
        except (GitError, ValueError):
            continue
        started = meta.get("started") if isinstance(meta.get("started"), str) else None
        return Tail(run_id, meta["flow"], started, max(meta["total"], len(data)), data)
    return None


def running(store: Store, flow: str) -> list[str]:
    """The ids of the runs of `flow` the live refs show in flight, oldest first."""
    found = []
    for _name, sha in store.refs(LIVE_REFS).items():
        try:
            entries = store.listdir(sha)
        except (GitError, ValueError):
            continue
        for entry in entries:
            run_id = entry.name[:-len(".json")] if entry.name.endswith(".json") else None
            if run_id and RUN_ID.match(run_id) and (meta := _meta(store, sha, run_id)) and meta["flow"] == flow:
                found.append(run_id)
    return sorted(found)
