"""`puppemon upcoming [FLOW] [-n N]`: the next fire times of the deployed flows, like `systemctl list-timers`.

What is deployed is the remote's flows branch (fetched with the runs branch and the daemons'
status refs, as `status` does: not again within a few seconds); with nothing deployed, or no
remote, the working tree's puppemon.yaml, with a note on stderr. Cron times are worked out here
(project/cron.py, pure Python), and so are intervals' (their grid is anchored to the Unix epoch).
Paused flows (control/ on the runs branch) are marked, with their reason below the table.

Columns, most important first: FLOW and NEXT (the viewer's local time) always, then LEFT, TRIGGER,
FLOW TIME (the same moment in the flow's timezone) and ON (the heartbeating daemons that can take the
flow, by its runs_on and their labels: shown when there are several daemons or a flow asks for
labels); the narrowest that do not fit the width (the terminal's, or $COLUMNS) are left out. `--json`
prints one object:
    {"source": {"kind": "deployed"|"working tree", "remote", "commit"}, "now": UTC,
     "flows": [{"flow", "trigger", "timezone", "next": [UTC, ...], "note": text|null,
                "paused": control state|null, "runs_on": [label, ...], "on": [daemon, ...]}, ...]}
"""
from __future__ import annotations

import json
import os
import sys
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from puppemon.errors import PuppemonError
from puppemon.history.placement import can_take

UTC = timezone.utc
COLUMNS = ("NEXT", "LEFT", "FLOW", "TRIGGER", "FLOW TIME", "ON")
DROP_ORDER = ("ON", "FLOW TIME", "TRIGGER", "LEFT")    # left out first to last when the width is short


def main(flow: str | None = None, count: int = 1, as_json: bool = False, remote: str | None = None,
         fetch: bool | None = None, directory: str = ".", now: datetime | None = None) -> int:
    from puppemon.commands.reading import open_history

    history = open_history(directory, remote, fetch, status=True)
    now = now or datetime.now(UTC)
    manifest, source = _manifest(history, directory)
    flows = manifest.flows
    if flow is not None and flow not in flows:
        raise PuppemonError(f"no flow {flow!r} in the {_where(source)} (flows: {', '.join(flows) or 'none'})")
    paused = _paused(history.store)
    takers = _takers(history.store, now)
    entries = [{**_entry(f, now, count, paused.get(name)), "runs_on": list(f.runs_on),
                "on": [d for d, labels in takers if can_take(labels, f.runs_on)]}
               for name, f in flows.items() if flow is None or name == flow]
    if as_json:
        print(json.dumps({"source": source, "now": _iso(now), "flows": entries}, indent=2))
        return 0
    if source["kind"] != "deployed":
        print(f"note: {source['note']}", file=sys.stderr)
    _print(entries, now, len(takers) > 1 or any(f.runs_on for f in flows.values()))
    return 0


def _where(source: dict) -> str:
    if source["kind"] == "deployed":
        return f"deployed flows ({source['commit'][:7]} on {source['remote']})"
    return "puppemon.yaml here"


def _manifest(history, directory: str):
    """The deployed manifest and where it came from; the working tree's when nothing is deployed."""
    from puppemon.history.status import FLOWS_TIP
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, load, parse
    from puppemon.project.root import find_root

    tip = history.store.ref(FLOWS_TIP) if history.remote else None
    if tip is not None:
        try:
            manifest = parse(history.store.read(tip, MANIFEST_NAME) or b"", MANIFEST_NAME)
            return manifest, {"kind": "deployed", "remote": history.remote, "commit": tip}
        except ManifestError:
            note = f"the deployed flows commit {tip[:7]} is not valid (the daemons refused it)"
    else:
        note = f"nothing is deployed on {history.remote}" if history.remote else "no remote"
    return load(find_root(directory)), {"kind": "working tree", "remote": history.remote, "commit": None,
                                        "note": f"{note}: showing {MANIFEST_NAME} here"}


def _paused(store) -> dict[str, dict]:
    from puppemon.history.control import paused, read_states

    return paused(read_states(store, store.ref("refs/heads/runs")))


def _takers(store, now: datetime) -> list[tuple[str, tuple[str, ...]]]:
    """(name, labels) of each heartbeating daemon."""
    from puppemon.history.status import heartbeating, labels_of

    return [(str(s.get("name") or "?"), labels_of(s)) for s in heartbeating(store, now)]


def _entry(flow, now: datetime, count: int, paused: dict | None) -> dict:
    from puppemon.project.triggers import describe

    times: set[datetime] = set()
    note = None
    for trigger in flow.triggers:
        moment = now
        for _ in range(count):
            moment = trigger.next_fire(moment)
            if moment is None:
                break
            times.add(moment.astimezone(UTC))
        if moment is None and not times:
            note = note or trigger.preview(now)
    return {"flow": flow.name, "trigger": describe(flow), "timezone": flow.timezone,
            "next": [_iso(t) for t in sorted(times)[:count]],
            "note": note if not times else None, "paused": paused}


def _iso(moment: datetime) -> str:
    from puppemon.formats import utc_iso

    return utc_iso(moment)


def rows_of(entries: list[dict], now: datetime) -> list[dict[str, str]]:
    """A row per fire time (soonest first), then the flows with no time; cells by column name."""
    from puppemon.formats import format_duration, parse_iso

    timed, untimed = [], []
    for entry in entries:
        mark = "paused" if entry["paused"] else None
        for text in entry["next"]:
            moment = parse_iso(text)
            zone = ZoneInfo(entry["timezone"])
            timed.append((moment, {"NEXT": moment.astimezone().strftime("%Y-%m-%d %H:%M %Z"),
                                   "LEFT": mark or format_duration((moment - now).total_seconds()),
                                   "FLOW": entry["flow"], "TRIGGER": entry["trigger"],
                                   "FLOW TIME": moment.astimezone(zone).strftime("%a %H:%M %Z"),
                                   "ON": _on(entry)}))
        if not entry["next"]:
            untimed.append({"NEXT": entry["note"] or "on trigger", "LEFT": mark or "-", "FLOW": entry["flow"],
                            "TRIGGER": entry["trigger"], "FLOW TIME": "-", "ON": _on(entry)})
    return [row for _, row in sorted(timed, key=lambda item: (item[0], item[1]["FLOW"]))] + untimed


def _on(entry: dict) -> str:
    return ", ".join(entry.get("on") or []) or "none"


def fit(rows: list[dict[str, str]], width: int | None, on: bool = True) -> list[str]:
    """The columns to show: all that fit in `width` (None: all), leaving out DROP_ORDER's first; ON
    only with `on`."""
    from puppemon.ui import GAP
    from puppemon.ui import width as cells

    columns = [c for c in COLUMNS if on or c != "ON"]

    def total(cols: list[str]) -> int:
        return sum(max([len(c)] + [cells(r[c]) for r in rows]) for c in cols) + GAP * (len(cols) - 1)

    for name in (c for c in DROP_ORDER if c in columns):
        if width is None or total(columns) <= width:
            break
        columns.remove(name)
    return columns


def _width() -> int | None:
    """The width to fit: $COLUMNS, else the terminal's; None (no limit) off a terminal."""
    from puppemon.ui import is_terminal

    text = os.environ.get("COLUMNS", "")
    if text.isdigit() and int(text) > 0:
        return int(text)
    if is_terminal(sys.stdout):
        import shutil

        return shutil.get_terminal_size().columns
    return None


def _print(entries: list[dict], now: datetime, on: bool = False) -> None:
    from puppemon.history.control import describe
    from puppemon.ui import print_lines, print_table

    if not entries:
        print("no flows")
        return
    rows = rows_of(entries, now)
    columns = fit(rows, _width(), on)
    print_table(columns, [[row[c] for c in columns] for row in rows])
    notes = [[f"{e['flow']}: ", (describe(e["paused"]), "yellow")] for e in entries if e["paused"]]
    if notes:
        print_lines(notes)
