"""A run's page: its record, the end of its log, its result, its outputs with a preview and a diff against
the same output of the flow's previous run; a run not finished yet: where it is and its live tail.

Bounded whatever the run: a page shows the last LOG_SHOWN bytes of a log (the whole of it is a download),
OUTPUTS_SHOWN outputs, and previews and diffs of the first PREVIEWED of them only.
"""
from __future__ import annotations

import difflib
import json

from puppemon.formats import run_dir
from puppemon.history.records import record_tips
from puppemon.web.diffs import DIFF_LINES, DIFF_MAX, PREVIEW, text as _text
from puppemon.web.reading import Sources, find_run, previous_run

LOG_SHOWN = 512 * 1024
OUTPUTS_SHOWN = 200
PREVIEWED = 20
RUN_PAGES = 32          # finished runs' pages kept made (each one's log part is up to LOG_SHOWN)


def run_page(sources: Sources, run_id: str) -> dict:
    """What the run page of `run_id` shows (reading.NotFound when there is no such run)."""
    runs, located = find_run(sources, run_id)
    if located.state != "finished":
        return {"id": located.id, "flow": located.flow, "state": located.state, "daemon": located.daemon,
                "since": located.since, "reason": located.reason, "run": None, "live": live_part(sources, located.id)}
    key = ("run", located.id)
    with sources.lock:
        if key in sources.cache:       # a recorded run does not change
            return sources.cache[key]
    page = finished(sources, located.record, previous_run(runs, located.record))
    with sources.lock:
        sources.cache[key] = page
        kept = [k for k in sources.cache if k[0] == "run"]   # oldest first: a page holds up to ~1 MB of log
        for old in kept[:-RUN_PAGES]:
            del sources.cache[old]
    return page


def live_part(sources: Sources, run_id: str, since: int = 0) -> dict | None:
    """{total, start, log} of a run in flight's live tail from byte `since` on (None: no tail is published)."""
    tail = sources.tail(run_id)
    if tail is None:
        return None
    skip = max(0, since - tail.start)
    return {"total": tail.total, "start": tail.start + skip,
            "log": tail.data[skip:].decode("utf-8", "replace")}


def blob(sources: Sources, record: dict, name: str):
    """(oid, size) of a file of a run's directory, from the tip or its month's archive, or None."""
    store, path = sources.store, f"{run_dir(record['flow'], record['id'])}/{name}"
    for where in record_tips(store, store.ref(sources.runs_ref), record["id"]):
        entry = store.lookup(where, path)
        if entry is not None and not entry.is_tree:
            return entry.oid, store.size(entry.oid, entry.mode)
    return None


def finished(sources: Sources, record: dict, previous: dict | None) -> dict:
    """The page of a recorded run (`previous`: the flow's run before it, or None)."""
    store = sources.store
    log = blob(sources, record, "log.txt")
    data = store.data(log[0]) if log else b""
    result = None
    if record.get("has_result") and (found := blob(sources, record, "result.json")):
        try:
            result = json.dumps(json.loads(store.data(found[0])), indent=2, ensure_ascii=False)
        except ValueError:
            result = store.data(found[0]).decode("utf-8", "replace")
    outputs = list(record.get("outputs") or [])
    shown = [_output(sources, record, previous, out, n < PREVIEWED) for n, out in enumerate(outputs[:OUTPUTS_SHOWN])]
    return {"id": record["id"], "flow": record["flow"], "state": "finished", "run": record,
            "log": data[-LOG_SHOWN:].decode("utf-8", "replace"), "log_size": len(data),
            "log_cut": len(data) > LOG_SHOWN, "result": result, "outputs": shown,
            "outputs_more": max(0, len(outputs) - OUTPUTS_SHOWN),
            "previous": previous["id"] if previous else None}


def _output(sources: Sources, record: dict, previous: dict | None, out: dict, detail: bool) -> dict:
    shown = {"path": out["path"], "size": out["size"], "sha256": out.get("sha256"), "preview": None, "diff": None,
             "against": None}
    if not detail:
        return shown
    mine = blob(sources, record, f"outputs/{out['path']}")
    if mine is None:
        return shown
    data = sources.store.data(mine[0]) if mine[1] <= DIFF_MAX else None
    text = _text(data) if data is not None else None
    if text is not None:
        shown["preview"] = text[:PREVIEW]
    theirs = blob(sources, previous, f"outputs/{out['path']}") if previous else None
    if previous is None or text is None:
        return shown
    shown["against"] = previous["id"]
    if theirs is None:
        shown["diff"] = f"(new: {previous['id']} had no {out['path']})"
        return shown
    if theirs[0] == mine[0]:
        shown["diff"] = "(unchanged)"
        return shown
    old = _text(sources.store.data(theirs[0])) if theirs[1] <= DIFF_MAX else None
    if old is None:
        shown["diff"] = "(the previous one is binary or too large to compare)"
        return shown
    lines = difflib.unified_diff(old.splitlines(keepends=True), text.splitlines(keepends=True),
                                 f"{previous['id']}/{out['path']}", f"{record['id']}/{out['path']}")
    shown["diff"] = "".join(list(lines)[:DIFF_LINES])
    return shown

