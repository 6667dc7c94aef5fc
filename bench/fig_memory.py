"""Figures 15 and 16: a daemon over time and over history.

memory (15): one `puppemon daemon --listen` serving HTTP-triggered runs one after the other (POST,
then the record committed in the daemon's mirror, watched from outside it; the daemon publishes in
the background, a burst at a time): its resident memory (VmRSS) and its own CPU time (utime + stime,
not its children's) per run, after the first runs and after many more;
flat is the goal (RSS + 2 MB at most, CPU per run within 1.25×). The runs all fall on one day, whose
date directories (runs/tick/<day>/, requests/<day>/) grow by a run and two request files a run.

http-scale (16): POST /flows/tick/runs to a daemon until the run's record is on the remote, with a
runs history of 100 / 10,000 / 100,000 records on the remote (bench/history.py, rotated as the daemon
rotates it), the sizes taking turns; against the same at 100 runs."""
from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from bench import history
from bench.common import Context, Row, git, median, puppemon_argv, stop_daemon
from bench.fig_daemon import deploy_project
from bench.fig_idle import cpu, rss, wait_for
from bench.fig_trigger import free_port, post

MANIFEST = 'version: 1\nflows:\n  tick:\n    command: ["true"]\n'
RSS_SLACK = 2 * 2**20
CPU_GOAL = 1.25
SCALE_GOAL = 1.3
PROGRESS = 500    # runs between the progress lines of the memory figure


def counts(ctx: Context) -> tuple[int, int]:
    return (100, 300) if ctx.quick else (500, 10_000)


def scale_sizes(ctx: Context) -> list[int]:
    return [100, 1_000] if ctx.quick else [100, 10_000, 100_000]


def rows_named(ctx: Context, name: str) -> list[str]:
    if name == "memory":
        first, last = counts(ctx)
        return [f"daemon RSS after {last:,} HTTP runs", f"daemon CPU per run after {last:,} HTTP runs"]
    return [f"POST → record on the remote at {n:,} runs" for n in scale_sizes(ctx)]


class Served:
    """A `puppemon daemon --listen` over `remote`, and how to ask it for runs."""

    def __init__(self, root: Path, remote: Path) -> None:
        from puppemon.gitstore import Store

        self.root, self.port, self.remote = root, free_port(), Store(remote)
        self.stores: dict[Path, Store] = {}
        self.log = open(root / "daemon.log", "wb")
        self.proc = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state",
                                      str(root / "state"), "--name", root.name, "--poll", "3600",
                                      "--listen", f"127.0.0.1:{self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self._health().get("flows_commit"), 600, f"the daemon of {root.name} and its first deploy")

    def _health(self) -> dict:
        if self.proc.poll() is not None:
            log = (self.root / 'daemon.log').read_text()[-2000:]
            raise RuntimeError(f"daemon exited {self.proc.returncode}: {log}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as resp:
                return json.loads(resp.read())
        except OSError:
            return {}

    def run_to_remote(self, where: str = "remote") -> float:
        """Seconds from POST to the run's record on the remote (or in the daemon's mirror)."""
        from puppemon.formats import run_dir
        from puppemon.gitstore import Store

        t0 = time.perf_counter()
        run_id = post(f"http://127.0.0.1:{self.port}/flows/tick/runs", {"params": {}})["run_id"]
        path, deadline = f"{run_dir('tick', run_id)}/run.json", time.monotonic() + 60
        repo = self.remote.git_dir if where == "remote" else self.root / "state" / "mirror.git"
        store = self.stores.get(repo) or self.stores.setdefault(repo, Store(repo))
        while not self._holds(store, path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"run {run_id} not in {repo} within 60 s")
            time.sleep(0.002)
            store = self.stores[repo]
        return time.perf_counter() - t0

    def _holds(self, store, path: str) -> bool:
        from puppemon.gitstore import Store

        try:
            tip = store.ref("refs/heads/runs")
            return bool(tip and store.lookup(tip, path))
        except Exception:  # noqa: BLE001 - read while a push or a commit lands: objects are moving in
            self.stores[store.git_dir] = Store(store.git_dir)
            return False

    def stop(self) -> None:
        stop_daemon(self.proc, self.log)


def measure_memory(ctx: Context) -> list[Row]:
    root = ctx.dir("memory")
    remote = deploy_project(root, MANIFEST)
    (root / "d").mkdir()
    daemon = Served(root / "d", remote)
    first, last = counts(ctx)
    window = first // 2   # CPU per run over the last `window` runs before each mark
    marks: dict[int, tuple[int, float]] = {}
    try:
        c0 = 0.0
        step = (time.monotonic(), cpu(daemon.proc.pid))
        for n in range(1, last + 1):
            daemon.run_to_remote("mirror")
            if n in (first - window, last - window):
                c0 = cpu(daemon.proc.pid)
            if n in (first, last):
                marks[n] = (rss(daemon.proc.pid), (cpu(daemon.proc.pid) - c0) / window)
            if n % PROGRESS == 0:     # the full figure takes hours: what it has seen so far
                now = (time.monotonic(), cpu(daemon.proc.pid))
                print(f"[memory] {n:,} runs: RSS {rss(daemon.proc.pid) / 2**20:.1f} MiB, the last {PROGRESS}: "
                      f"{(now[0] - step[0]) / PROGRESS * 1000:.0f} ms a run, daemon CPU "
                      f"{(now[1] - step[1]) / PROGRESS * 1000:.1f} ms a run", file=sys.stderr, flush=True)
                step = now
    finally:
        daemon.stop()
    (rss_first, cpu_first), (rss_last, cpu_last) = marks[first], marks[last]
    labels = rows_named(ctx, "memory")
    return [
        Row(15, labels[0], rss_last, "MB", rss_first, f"after {first:,} runs", "≤ +2 MB",
            rss_last <= rss_first + RSS_SLACK, note=f"{(rss_last - rss_first) / 2**20:+.1f} MB over "
                                                   f"{last - first:,} runs"),
        Row(15, labels[1], cpu_last, "s", cpu_first, f"after {first:,} runs", f"≤ {CPU_GOAL:g}× (flat)",
            cpu_last <= cpu_first * CPU_GOAL, note=f"the daemon's own CPU over {window} runs before each mark"),
    ]


def served_history(ctx: Context, n: int) -> Served:
    """A daemon over a remote whose runs branch holds `n` records (and the flows to run)."""
    root = ctx.dir(f"http-scale-{n}")
    remote = deploy_project(root, MANIFEST)
    history.build(remote, 0, n)
    (root / "d").mkdir()
    served = Served(root / "d", remote)
    served.run_to_remote()   # its first publish takes the rotation the daemon did at its start
    return served


def measure_scale(ctx: Context) -> list[Row]:
    sizes = scale_sizes(ctx)
    repeat = 7 if ctx.quick else 21
    daemons = {n: served_history(ctx, n) for n in sizes}
    times: dict[int, list[float]] = {n: [] for n in sizes}
    try:
        for k in range(-1, repeat):   # sizes take turns; one round of warm-up
            for n, daemon in daemons.items():
                took = daemon.run_to_remote()
                if k >= 0:
                    times[n].append(took)
                time.sleep(0.3)   # quiet between runs: each one is a burst of its own
        tips = {n: len([p for p in git("--git-dir", str(d.remote.git_dir), "ls-tree", "-r", "--name-only", "runs",
                                       "--", "runs").split() if p.endswith("/run.json")]) for n, d in daemons.items()}
    finally:
        for daemon in daemons.values():
            daemon.stop()
    base = median(times[sizes[0]])
    out = []
    for n, label in zip(sizes, rows_named(ctx, "http-scale")):
        value = median(times[n])
        note = f"{tips[n]:,} records in the runs tip; max {max(times[n]) * 1000:.0f} ms"
        if n == sizes[0]:
            out.append(Row(16, label, value, "s", base, f"same at {n} runs", "", None, note=note))
        else:
            out.append(Row(16, label, value, "s", base, f"same at {sizes[0]} runs", f"≤ {SCALE_GOAL:g}×",
                           value <= base * SCALE_GOAL, note=note))
    return out


def measure_named(ctx: Context, name: str) -> list[Row]:
    return measure_memory(ctx) if name == "memory" else measure_scale(ctx)
