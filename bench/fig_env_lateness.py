"""Figure 13: schedule lateness of an `every: 1s` command flow (`date +%s.%N`) on a real `puppemon daemon`
while a new deploy's environment builds, against the same daemon's lateness between builds. Windows
alternate: no build, then a push whose new flow declares `python: {requirements: ...}` (new contents each
round, so a new key), built by uv from a find-links server on 127.0.0.1 that answers its listing after a
delay (the build takes that long, as from a slow mirror; offline otherwise). Lateness is run.json's
`started` minus `scheduled`; the build window runs from the environment's temporary directory appearing
to the daemon's "deployed" line. p99 is nearest rank."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench import wheels
from bench.common import Context, Row, git, median, percentile, stop_daemon
from puppemon.formats import parse_iso

GOAL = 0.020

TICK = """\
version: 1
flows:
  tick:
    command: ["date", "+%s.%N"]
    every: 1s
"""
HEAVY = """\
  heavy:
    command: ["true"]
    python: {requirements: requirements.txt}
"""


def sizes(ctx: Context) -> tuple[int, float, float]:
    """(rounds, seconds without a build before each round and after the last, seconds a build takes)"""
    return (1, 2.5, 1.5) if ctx.quick else (3, 12.0, 10.0)


def rows(ctx: Context) -> list[str]:
    return ["schedule lateness p50 during an environment build", "schedule lateness p99 during an environment build"]


class BuildWatch:
    """Notes when an environment build is under way in the daemon's state dir (a `.tmp-<key>` directory)."""

    def __init__(self, envs: Path) -> None:
        self.envs = envs
        self.intervals: list[list[float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        building = False
        while not self.stop.wait(0.005):
            try:
                now = any(p.name.startswith(".tmp-") and not p.name.startswith(".tmp-api-")
                          for p in self.envs.iterdir())
            except OSError:
                now = False
            if now and not building:
                self.intervals.append([time.time(), None])
            elif building and not now:
                self.intervals[-1][1] = time.time()
            building = now


def wait_for(log: Path, text: str, timeout: float, sha: str) -> float:
    """When `text` shows in the daemon's log; RuntimeError when the deploy `sha` is refused or it takes too long."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = log.read_text(errors="replace")
        if text in got:
            return time.time()
        if f"deploy {sha[:7]} refused" in got:
            raise RuntimeError(got[got.index(f"deploy {sha[:7]} refused"):][:2000])
        time.sleep(0.01)
    raise RuntimeError(f"no {text!r} in the daemon's log after {timeout:g} s:\n{log.read_text()[-3000:]}")


def measure(ctx: Context) -> list[Row]:
    from puppemon.gitstore import Store
    from puppemon.history.records import RunStore
    from puppemon.project.snapshot import deploy

    rounds, quiet, delay = sizes(ctx)
    root = ctx.dir("env-lateness")
    house = wheels.wheelhouse(root / "wheels")
    remote = root / "remote.git"
    git("init", "--bare", "--quiet", str(remote))
    project = root / "project"
    project.mkdir()
    (project / "puppemon.yaml").write_text(TICK)
    git("init", "--quiet", str(project))
    git("add", "-A", cwd=project)
    git("commit", "--quiet", "-m", "flows", cwd=project)
    git("remote", "add", "origin", str(remote), cwd=project)
    first = deploy(project).commit
    state, log_path = root / "state", root / "daemon.log"
    builds, deployed = [], []
    with wheels.SlowFindLinks(house, delay) as server, open(log_path, "wb") as log:
        env = {**os.environ, **wheels.uv_settings(server.url, root / "uv-cache")}
        daemon = subprocess.Popen([sys.executable, "-m", "puppemon", "daemon", "--remote", str(remote),
                                   "--state", str(state), "--name", "bench", "--poll", "0.5", "--grace", "10"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        watch = BuildWatch(state / "envs")
        try:
            wait_for(log_path, f"deployed {first[:7]}", 60, first)
            watch.thread.start()
            for k in range(rounds):
                time.sleep(quiet)
                (project / "puppemon.yaml").write_text(TICK + HEAVY)
                (project / "requirements.txt").write_bytes(wheels.requirements(comment=f"round {k}"))
                git("add", "-A", cwd=project)
                git("commit", "--quiet", "-m", f"round {k}", cwd=project)
                sha = deploy(project).commit
                deployed.append(wait_for(log_path, f"deployed {sha[:7]}", delay + 120, sha))
            time.sleep(quiet)
        finally:
            watch.stop.set()
            stop_daemon(daemon, log)
    if daemon.returncode != 0:
        raise RuntimeError(f"daemon exited {daemon.returncode}: {log_path.read_text()[-3000:]}")
    builds = [(s, e) for s, e in watch.intervals if e is not None]
    if len(builds) != rounds:
        raise RuntimeError(f"saw {len(builds)} builds for {rounds} deploys: {watch.intervals}")
    windows = [(s, d) for (s, _), d in zip(builds, deployed)]   # build start -> deploy swapped in
    runs = RunStore(Store(remote))
    during, between, printed_during, printed_between, fired = [], [], [], [], []
    for record in runs.list(flow="tick"):
        if record["status"] != "succeeded":
            raise RuntimeError(f"run {record['id']} {record['status']}: {record.get('error')}")
        scheduled = parse_iso(record["scheduled"]).timestamp()
        fired.append(scheduled)
        late = parse_iso(record["started"]).timestamp() - scheduled
        printed = float(runs.read_file(record, "log.txt").decode().split()[0]) - scheduled
        if any(s <= scheduled <= d for s, d in windows):
            during.append(late)
            printed_during.append(printed)
        elif not any(s - 1 <= scheduled <= d + 1 for s, d in windows):  # clear of any deploy
            between.append(late)
            printed_between.append(printed)
    if not during:
        raise RuntimeError(f"no fire during the builds ({len(between)} between)")
    fired.sort()
    missed = sum(max(0, round(b - a) - 1) for a, b in zip(fired, fired[1:]))  # every: 1s, so gaps are missed fires
    took = [e - s for s, e in builds]

    def ms(values: list[float], pct: float | None = None) -> str:  # --quick under load may have no fire between
        if not values:
            return "-"
        return f"{(percentile(values, pct) if pct else max(values)) * 1000:.1f} ms"

    note = (f"{len(during)} fires during {rounds} builds, {len(between)} between, {missed} missed; builds took "
            f"{median(took):.1f} s (median; a find-links listing delayed {delay:g} s); "
            f"command running − scheduled: p99 {ms(printed_during, 99)} during, {ms(printed_between, 99)} between; "
            f"max during {ms(during)}, between {ms(between)}")
    return [Row(13, "schedule lateness p50 during an environment build", median(during), "ms",
                median(between) if between else None, "same daemon, between builds"),
            Row(13, "schedule lateness p99 during an environment build", percentile(during, 99), "ms",
                percentile(between, 99) if between else None, "same daemon, between builds",
                f"≤ {GOAL * 1000:g} ms", percentile(during, 99) <= GOAL, note=note)]
