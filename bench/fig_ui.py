"""Figure 20: the dashboard at 100,000 runs (the history of figure 3): the server time of the overview and
of a run page (web/app.py, in-process, after the refs moved: no page served from the cache), against
`git show runs:<path>/run.json`; and `puppemon ui --export` of the whole history, cold (against writing as many files of a run page's size
from Python: a page per run), then again after one more run is recorded."""
from __future__ import annotations

import time

from bench import history
from bench.common import Context, Row, git, interleaved, median, puppemon_argv, run
from bench.fig_record import prepared
from puppemon.formats import run_dir

GOALS = {"overview": 0.150, "run": 0.100, "cold": 60.0, "again": 2.0}


def size(ctx: Context) -> int:
    return 1_000 if ctx.quick else 100_000


def rows(ctx: Context) -> list[str]:
    n = f"{size(ctx):,} runs"
    return [f"dashboard overview, server time ({n})", f"dashboard run page, server time ({n})",
            f"ui --export, cold ({n})", f"ui --export after one new run ({n})"]


def _clone(ctx: Context, n: int):
    remote, _local, _ = prepared(ctx, n)
    project = ctx.dir(f"ui-{n}") / "project"
    if not (project / ".git").exists():
        git("clone", "--quiet", "--bare", str(remote), str(project / ".git"))
        git("--git-dir", str(project / ".git"), "config", "core.bare", "false")
    return remote, project


def measure(ctx: Context) -> list[Row]:
    from puppemon.gitstore import Store
    from puppemon.web.app import Access, App
    from puppemon.web.reading import Sources

    n = size(ctx)
    remote, project = _clone(ctx, n)
    store = Store(project / ".git")
    sources = Sources(store)
    app = App(sources, Access())
    target = history.record(n // 2)
    path = run_dir(target["flow"], target["id"])

    def fresh(page: str) -> None:
        sources.cache.clear()          # as after a new tip: nothing cached
        assert app.get(page, {}).code == 200

    repeat = 5 if ctx.quick else 11
    times = interleaved({"overview": lambda: fresh("/"), "run": lambda: fresh(f"/runs/{target['id']}.html"),
                         "git": lambda: run(["git", "show", f"runs:{path}/run.json"], cwd=project)}, repeat=repeat)
    m = {k: median(v) for k, v in times.items()}
    files = ctx.dir(f"ui-{n}/files")
    page = b"x" * 2500                 # about a run page's size
    t0 = time.perf_counter()
    for i in range(n):
        (files / f"{i}.html").write_bytes(page)
    write_files = time.perf_counter() - t0
    site = ctx.dir(f"ui-{n}") / "site"
    t0 = time.perf_counter()
    run([*puppemon_argv(), "ui", "--export", str(site), "--no-fetch"], cwd=project)
    cold = time.perf_counter() - t0
    tip = history.build(project / ".git", n, 1)
    git("--git-dir", str(project / ".git"), "update-ref", "refs/heads/runs", tip)
    t0 = time.perf_counter()
    out = run([*puppemon_argv(), "ui", "--export", str(site), "--no-fetch"], cwd=project).stdout.decode()
    again = time.perf_counter() - t0
    labels = rows(ctx)
    return [
        Row(20, labels[0], m["overview"], "s", m["git"], "git show runs:<path>/run.json",
            f"≤ {GOALS['overview'] * 1000:.0f} ms", m["overview"] <= GOALS["overview"]),
        Row(20, labels[1], m["run"], "s", m["git"], "git show runs:<path>/run.json",
            f"≤ {GOALS['run'] * 1000:.0f} ms", m["run"] <= GOALS["run"]),
        Row(20, labels[2], cold, "s", write_files, f"writing {n:,} files of 2.5 KB", f"≤ {GOALS['cold']:g} s",
            cold <= GOALS["cold"]),
        Row(20, labels[3], again, "s", None, "", f"≤ {GOALS['again']:g} s", again <= GOALS["again"],
            note=out.strip()),
    ]
