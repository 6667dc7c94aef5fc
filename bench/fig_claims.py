"""Figure 18: several daemons on one remote. An `every: 1s` flow whose command is `date +%s.%N`, run by
one daemon and by three (real `puppemon daemon` processes, `--poll 1`, on one local bare remote):
lateness (printed time minus scheduled time) p50/p99 of the fires scheduled in the measured window,
and the git round trips on `runs` (fetches and pushes, counted by a `git` wrapper first on PATH) per
fire: alone a daemon pays none for a claim, with company each fire costs its claim's fetch and push."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Context, Row, percentile
from bench import fig_daemon
from bench.fig_daemon import deploy_project
from puppemon.formats import parse_iso

MANIFEST = fig_daemon.MANIFEST + "    overlap: parallel\n"   # figure 6's flow, its runs free to overlap
WRAPPER = """\
#!/bin/sh
case " $* " in *" push "*|*" fetch "*) echo "$(date +%s.%N) $PUPPEMON_BENCH_DAEMON $*" >> "{log}";; esac
exec "{git}" "$@"
"""


def seconds(ctx: Context) -> int:
    return 10 if ctx.quick else 60


def rows(ctx: Context) -> list[str]:
    return [f"{n} daemon{'s' if n > 1 else ''}: lateness {p}" for n in (1, 3) for p in ("p50", "p99")] + [
        "git round trips on runs per fire, alone", "git round trips on runs per fire, 3 daemons",
        "failover: kill -9 → next fire run by another daemon", "failover: kill -9 → its run recorded crashed"]


def run_daemons(ctx: Context, count: int) -> tuple[list[float], float]:
    """(lateness of each fire in the window, round trips on `runs` per fire per daemon)."""
    root = ctx.dir(f"claims-{count}")
    remote = deploy_project(root, MANIFEST)
    calls, wrapper = root / "git-calls.log", root / "bin"
    wrapper.mkdir()
    (wrapper / "git").write_text(WRAPPER.format(log=calls, git=shutil.which("git")))
    (wrapper / "git").chmod(0o755)
    env = {**os.environ, "PATH": f"{wrapper}{os.pathsep}{os.environ['PATH']}"}
    procs = []
    for i in range(count):
        argv = [sys.executable, "-m", "puppemon", "daemon", "--remote", str(remote), "--state",
                str(root / f"state{i}"), "--name", f"d{i}", "--poll", "1"]
        procs.append(subprocess.Popen(argv, env={**env, "PUPPEMON_BENCH_DAEMON": f"d{i}"},
                                      stdout=subprocess.DEVNULL, stderr=open(root / f"d{i}.log", "wb"),
                                      cwd=Path(__file__).resolve().parent.parent))
    try:
        time.sleep(12 if count > 1 else 4)   # the daemons find each other (about two poll intervals)
        start = time.time()
        time.sleep(seconds(ctx))
        end = time.time()
        time.sleep(3)   # the last fires are recorded and published
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    return _lateness(remote, start, end), _round_trips(calls, start, end) / count / (end - start)


def _lateness(remote: Path, start: float, end: float) -> list[float]:
    from puppemon.gitstore import Store
    from puppemon.history.records import RunStore

    runs, late, seen = RunStore(Store(remote)), [], set()
    for record in runs.list(flow="tick"):
        scheduled = parse_iso(record["scheduled"]).timestamp()
        if not start <= scheduled < end - 1 or record["status"] != "succeeded":
            continue
        if scheduled in seen:
            raise RuntimeError(f"the fire of {record['scheduled']} ran twice")
        seen.add(scheduled)
        late.append(float(runs.read_file(record, "log.txt").decode().split()[0]) - scheduled)
    if len(late) < (end - start) - 2:
        raise RuntimeError(f"only {len(late)} fires ran in {end - start:.0f} s")
    return late


def _round_trips(calls: Path, start: float, end: float) -> int:
    count = 0
    for line in calls.read_text().splitlines() if calls.exists() else []:
        moment, _, argv = line.split(" ", 2)
        if start <= float(moment) < end and "refs/heads/runs" in argv:
            count += 1
    return count


def measure(ctx: Context) -> list[Row]:
    alone, alone_trips = run_daemons(ctx, 1)
    three, three_trips = run_daemons(ctx, 3)
    out = []
    for n, late in ((1, alone), (3, three)):
        for pct, label in ((50, "p50"), (99, "p99")):
            value = percentile(late, pct)
            note = f"{len(late)} fires, git calls counted by a wrapper (figure 6: one daemon without it)"
            out.append(Row(18, f"{n} daemon{'s' if n > 1 else ''}: lateness {label}", value, "ms",
                           percentile(alone, pct) if n > 1 else None, "one daemon" if n > 1 else "", "", None,
                           note=note if pct == 50 else ""))
    out.append(Row(18, "git round trips on runs per fire, alone", alone_trips, "", None, "", "", None,
                   note="fetches and pushes of runs per daemon per fire (one a second): records, and the cycle's "
                        "fetch at --poll 1"))
    out.append(Row(18, "git round trips on runs per fire, 3 daemons", three_trips, "", alone_trips, "alone", "",
                   None, note="per daemon: a claim is one fetch and one push, more when a push loses a race"))
    next_fire, crashed = failover(ctx)
    out.append(Row(18, "failover: kill -9 → next fire run by another daemon", next_fire, "s", note=(
        "3 daemons, `every: 1s`, runs of 3 s; the others claim every fire, so the next one is not delayed")))
    out.append(Row(18, "failover: kill -9 → its run recorded crashed", crashed, "s", 5.0,
                   "the gone bound (PUPPEMON_HEARTBEAT=1: five heartbeats)", note=(
                       "by default the bound is 300 s or more (history/status.py gone_after)")))
    return out


SLOW = MANIFEST.replace('["date", "+%s.%N"]', '"sleep 3"')


def failover(ctx: Context) -> tuple[float, float]:
    """Seconds from a kill -9 of one of three daemons (a run of its in flight) to the next fire started by
    another, and to that run recorded `crashed` on the remote (heartbeat 1 s: gone after 5 s)."""
    from puppemon.gitstore import Store
    from puppemon.history.records import RunStore

    root = ctx.dir("failover")
    remote = deploy_project(root, SLOW)
    env = {**os.environ, "PUPPEMON_HEARTBEAT": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "puppemon", "daemon", "--remote", str(remote), "--state",
                               str(root / f"state{i}"), "--name", f"d{i}", "--poll", "0.3"], env=env,
                              stdout=subprocess.DEVNULL, stderr=open(root / f"d{i}.log", "wb"),
                              cwd=Path(__file__).resolve().parent.parent) for i in range(3)]
    try:
        time.sleep(15)   # the daemons find each other and share the fires
        runs = RunStore(Store(remote))
        procs[0].kill()
        killed = time.time()
        next_fire = crashed = None
        while time.time() < killed + 60 and (next_fire is None or crashed is None):
            time.sleep(0.2)
            runs = RunStore(Store(remote))
            for record in runs.list(flow="tick", limit=50):
                if record["status"] == "crashed" and record.get("daemon") == "d0" and crashed is None:
                    crashed = time.time() - killed
                started = parse_iso(record["started"]).timestamp() if record.get("started") else 0
                if record["status"] == "succeeded" and started > killed and record.get("daemon") != "d0":
                    next_fire = min(next_fire or 1e9, started - killed)
    finally:
        for proc in procs[1:]:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(60)
    if next_fire is None or crashed is None:
        raise RuntimeError("failover: no fire ran after the kill, or the killed daemon's run was not recorded")
    return next_fire, crashed
