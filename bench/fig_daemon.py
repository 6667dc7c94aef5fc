"""Figures 6 and 7, from one daemon running an `every: 1s` flow whose command is
`date +%s.%N`: lateness is the time the command printed minus the run's scheduled
time (p50/p99/max; never early), against a Python loop that sleeps to the same kind
of deadlines and spawns the same command. Overhead is scheduled → record committed
(and → pushed) against running the command bare with subprocess.run."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Context, Row, git, median, percentile, run
from puppemon.formats import parse_iso

LATENESS_GOAL = 0.020
OVERHEAD_GOAL = 0.150
COMMAND = ["date", "+%s.%N"]

MANIFEST = """\
version: 1
flows:
  tick:
    command: ["date", "+%s.%N"]
    every: 1s
"""


def fires(ctx: Context) -> int:
    return 5 if ctx.quick else 60


def rows_named(ctx: Context, name: str) -> list[str]:
    if name == "lateness":
        return ["schedule lateness p50", "schedule lateness p99", "schedule lateness max"]
    return ["trivial run: scheduled → recorded", "trivial run: scheduled → pushed"]


def rows(ctx: Context) -> list[str]:
    return rows_named(ctx, "lateness") + rows_named(ctx, "overhead")


def deploy_project(root: Path, manifest: str) -> Path:
    """A bare remote whose flows branch holds `manifest` (pushed with puppemon's own deploy)."""
    from puppemon.project.snapshot import deploy

    remote = root / "remote.git"
    git("init", "--bare", "--quiet", str(remote))
    project = root / "project"
    git("init", "--quiet", str(project))
    (project / "puppemon.yaml").write_text(manifest)
    git("add", "-A", cwd=project)
    git("commit", "--quiet", "-m", "flows", cwd=project)
    git("remote", "add", "origin", str(remote), cwd=project)
    deploy(project)
    return remote


def run_daemon(ctx: Context) -> dict:
    if "daemon" in ctx.cache:
        return ctx.cache["daemon"]
    n = fires(ctx)
    root = ctx.dir("daemon")
    remote = deploy_project(root, MANIFEST)
    out = root / "probe.jsonl"
    proc = subprocess.run([sys.executable, "-m", "bench.daemon_probe", str(out), str(n), "--remote",
                           str(remote), "--state", str(root / "state")],
                          capture_output=True, timeout=n * 3 + 60, cwd=Path(__file__).resolve().parent.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"daemon exited {proc.returncode}: {proc.stderr.decode(errors='replace')[-2000:]}")
    probes = {e["id"]: e for e in map(json.loads, out.read_text().splitlines())}
    from puppemon.gitstore import Store
    from puppemon.history.records import RunStore

    runs = RunStore(Store(remote))
    late, stages = [], {"wake": [], "handoff": [], "spawn": [], "late": []}
    for record in runs.list(flow="tick"):
        if record["status"] != "succeeded":
            raise RuntimeError(f"run {record['id']} {record['status']}: {record.get('error')}")
        printed = float(runs.read_file(record, "log.txt").decode().split()[0])
        scheduled, started = (parse_iso(record[k]).timestamp() for k in ("scheduled", "started"))
        late.append(printed - scheduled)
        fired = probes.get(record["id"], {}).get("fired")
        if fired is not None:  # where the lateness goes: scheduler, daemon, runner
            stages["wake"].append(fired - scheduled)
            stages["handoff"].append(started - fired)
            stages["spawn"].append(printed - started)
            stages["late"].append(printed - scheduled)
    if len(late) < n:
        raise RuntimeError(f"only {len(late)} of {n} runs recorded on the remote")
    recorded = [p["recorded"] - parse_iso(p["scheduled"]).timestamp() for p in probes.values()]
    pushed = [p["published"] - parse_iso(p["scheduled"]).timestamp() for p in probes.values() if "published" in p]
    ctx.cache["daemon"] = {"late": late, "recorded": recorded, "pushed": pushed, "stages": stages}
    return ctx.cache["daemon"]


def baseline_lateness(n: int) -> list[float]:
    """A bare loop: sleep to each whole-second deadline, spawn the command, compare what it printed."""
    late = []
    deadline = time.time() + 1
    for _ in range(n):
        time.sleep(max(0.0, deadline - time.time()))
        printed = float(subprocess.run(COMMAND, capture_output=True, check=True).stdout)
        late.append(printed - deadline)
        deadline += 1
    return late


def measure_named(ctx: Context, name: str) -> list[Row]:
    data = run_daemon(ctx)
    n = fires(ctx)
    if name == "lateness":
        late = data["late"]
        if "baseline_late" not in ctx.cache:
            ctx.cache["baseline_late"] = baseline_lateness(n)
        base = ctx.cache["baseline_late"]
        early = [x for x in late if x < 0]
        note = f"{len(late)} fires; earliest {min(late) * 1000:+.1f} ms" + (
            f"; {len(early)} EARLY" if early else "; never early")
        stages = data["stages"]
        if stages["wake"]:
            note += ("; median split: scheduler wake-up {:+.1f} ms, fire → runner start {:+.1f} ms, "
                     "runner start → command running {:+.1f} ms").format(
                *(median(stages[k]) * 1000 for k in ("wake", "handoff", "spawn")))
            worst = max(range(len(stages["late"])), key=stages["late"].__getitem__)
            note += "; the latest fire (#{} of {}): {:+.1f}, {:+.1f}, {:+.1f} ms".format(
                len(stages["late"]) - worst, len(stages["late"]),  # records come newest first
                *(stages[k][worst] * 1000 for k in ("wake", "handoff", "spawn")))
        out = []
        for pct, label in ((50, "p50"), (99, "p99"), (100, "max")):
            value, b = percentile(late, pct), percentile(base, pct)
            goal = f"≤ {LATENESS_GOAL * 1000:g} ms, never early" if pct == 99 else ""
            ok = (value <= LATENESS_GOAL and not early) if pct == 99 else None
            out.append(Row(6, f"schedule lateness {label}", value, "ms", b, "sleep-to-deadline loop", goal, ok,
                           note=note if pct == 100 else ""))
        return out
    bare = [run_bare() for _ in range(21)]
    base = median(bare)
    value = median(data["recorded"])
    out = [Row(7, "trivial run: scheduled → recorded", value, "s", base, "subprocess.run, same command",
               f"≤ +{OVERHEAD_GOAL * 1000:g} ms", value - base <= OVERHEAD_GOAL,
               note=f"+{(value - base) * 1000:.0f} ms over the bare command")]
    if data["pushed"]:
        pushed = median(data["pushed"])
        out.append(Row(7, "trivial run: scheduled → pushed", pushed, "s", base, "subprocess.run, same command",
                       "", None, note=f"+{(pushed - base) * 1000:.0f} ms; push to a local bare remote"))
    else:
        out.append(Row(7, "trivial run: scheduled → pushed", None, "s", note="no publish observed"))
    return out


def run_bare() -> float:
    t0 = time.perf_counter()
    run(COMMAND)
    return time.perf_counter() - t0
