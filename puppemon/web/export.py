"""`puppemon ui --export DIR`: the dashboard's pages as a static site (relative links, no script).

Incremental: a run's page never changes once it is recorded, so it is written once (`.puppemon-export`
lists the run pages written); every other page is rendered again and written only when it differs.
A flow's first EXPORTED_PAGES pages of runs are exported; every run has its page (and links to the run
before it), so older runs stay reachable.
"""
from __future__ import annotations

import os
from pathlib import Path

from puppemon.web import details, reading, render
from puppemon.web.pages import PAGES

EXPORTED_PAGES = 4
STATE = ".puppemon-export"


def _write(root: Path, path: str, data: bytes, new: bool = False) -> bool:
    """Write `data` at `path` under `root` unless it holds that already (`new`: it holds nothing yet);
    whether it was written."""
    target = root / path
    try:
        if not new and target.read_bytes() == data:
            return False
    except OSError:
        pass
    target.parent.mkdir(parents=True, exist_ok=True)
    if new:   # a run page not listed as written: an export cut short writes it again next time
        target.write_bytes(data)
        return True
    scratch = target.with_name(target.name + ".tmp")
    scratch.write_bytes(data)
    os.replace(scratch, target)
    return True


def export(store, directory: str, sources: reading.Sources | None = None) -> tuple[int, int]:
    """Write the site into `directory`; (pages written, pages left as they were)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    sources = sources or reading.Sources(store)
    counts = [0, 0]

    def put(path: str, data: bytes, new: bool = False) -> None:
        counts[0 if _write(root, path, data, new) else 1] += 1

    def page(name: str, **args) -> None:
        item = PAGES[name]
        data = item.data(sources, **args)
        if name == "flow" and args.get("page", 1) >= EXPORTED_PAGES:
            data = {**data, "more": False}
        path = item.path(**args)
        put(path, render.page(item.template, data, path, "static").encode())

    put("static/dashboard.css", render.static_file("dashboard.css"))
    page("overview")
    page("deploys")
    runs = sources.runs()
    done = _done(root)
    for flow in sorted(set(runs.flows()) | set(reading.manifest_flows(sources))):   # the overview links each
        for number in range(1, EXPORTED_PAGES + 1):
            page("flow", flow=flow, page=number)
            if not reading.flow_page(sources, flow, number)["more"]:
                break
        counts[1] += _runs(sources, runs, flow, root, done, put)
    (root / STATE).write_text("".join(f"{path}\n" for path in sorted(done)))
    return counts[0], counts[1]


def _done(root: Path) -> set[str]:
    """The run pages an earlier export wrote (all of them again when the runs/ directory is gone)."""
    try:
        listed = (root / STATE).read_text().split()
    except OSError:
        return set()
    return set(listed) if (root / "runs").is_dir() else set()


def _runs(sources, runs, flow: str, root: Path, done: set[str], put) -> int:
    """Write the page of each recorded run of `flow` not written before; how many were there already."""
    kept = 0
    ids = list(runs.flow_ids(flow))
    for n, run_id in enumerate(ids):
        path = PAGES["run"].path(run_id=run_id)
        if path in done:
            kept += 1
            continue
        record = runs.get(flow, run_id)
        if record is None:
            continue
        previous = reading.first_readable(runs, flow, iter(ids[n + 1:n + 1 + reading.PREVIOUS]))
        data = details.finished(sources, record, previous)
        put(path, render.page("run.html", data, path, "static").encode(), new=True)
        done.add(path)
    return kept
