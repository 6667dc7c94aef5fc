"""Figure 21, flows on Slurm (a single-node cluster on 127.0.0.1, started here as the tests start it).
21a: the runner's `execute` of a trivial command flow (`true`) with `slurm: {}`, from submit to its
result, against `sbatch --parsable` of the same one-line script followed by hand (`squeue` every 50 ms
until the job shows an end state), alternating; the goal is within 1.2×. 21b: the CPU a daemon spends
following 50 Slurm runs in flight (its own and its children's, `squeue` included) per second, against
the same daemon with 50 local runs of the same `sleep` in flight. Opt-in (`--only slurm`): it needs
root and slurm-wlm with munge."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Context, Row, interleaved, median, puppemon_argv, stop_daemon
from bench.fig_daemon import deploy_project
from bench.fig_idle import wait_for

RUN_GOAL = 1.2
IN_FLIGHT = 50
WINDOW = 10.0   # seconds of CPU measured while the runs are in flight


def rows(ctx: Context) -> list[str]:
    return ["trivial flow as a Slurm job", f"daemon CPU, {_in_flight(ctx)} Slurm runs in flight"]


def _in_flight(ctx: Context) -> int:
    return 10 if ctx.quick else IN_FLIGHT


def measure(ctx: Context) -> list[Row]:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from tests.slurm import start_cluster, stop_cluster

    cluster = start_cluster()
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        return [_submit_to_result(ctx, cluster), _following_cost(ctx, cluster)]
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        stop_cluster(cluster)


def _submit_to_result(ctx: Context, cluster) -> Row:
    from puppemon.project.manifest import parse
    from puppemon.run.runner import execute
    from puppemon.run.slurm import SlurmBackend, SlurmConfig
    from puppemon.run.spec import RunSpec

    shared, code = ctx.dir("slurm/shared"), ctx.dir("slurm/code")
    flow = parse("version: 1\nflows:\n  job:\n    command: [\"true\"]\n    slurm: {}\n").flows["job"]
    backend = SlurmBackend(SlurmConfig(shared, poll=0.05))
    counter = iter(range(10**6))
    script = shared / "by-hand.sh"
    script.write_text("#!/bin/sh\ntrue\n")

    def through_puppemon() -> None:
        spec = RunSpec(run_id=f"20261201T000000Z-{next(counter):06x}", flow=flow, code_dir=code, params={},
                       backend=backend)
        result = execute(spec)
        assert result.status == "succeeded", (result.error, result.log)

    def by_hand() -> None:
        job = cluster.call("sbatch", "--parsable", f"--output={shared}/by-hand.log", str(script)).stdout.strip()
        while cluster.state(job) in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING"):
            time.sleep(0.05)

    repeat = 5 if ctx.quick else 15
    times = interleaved({"puppemon": through_puppemon, "bare": by_hand}, repeat)
    value, base = median(times["puppemon"]), median(times["bare"])
    return Row(21, rows(ctx)[0], value, "s", base, "sbatch --parsable + squeue every 50 ms", f"≤ {RUN_GOAL:g}×",
               value / base <= RUN_GOAL,
               note=f"{repeat} runs each, alternating; puppemon's adds a work copy of the code, an environment "
                    "file and the exit file, and ends on the exit file instead of squeue")


def _following_cost(ctx: Context, cluster) -> Row:
    count = _in_flight(ctx)

    def cpu_per_second(on_slurm: bool) -> float:
        root = Path(tempfile.mkdtemp(dir=ctx.dir("slurm")))
        slurm = "    slurm: {}\n" if on_slurm else ""
        flows = "".join(f"  job-{i}:\n    command: [\"sleep\", \"60\"]\n    run_on_deploy: true\n{slurm}"
                        for i in range(count))
        remote = deploy_project(root, f"version: 1\nflows:\n{flows}")
        (root / "shared").mkdir()
        log = open(root / "daemon.log", "wb")
        daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state", str(root / "s"),
                                   "--name", "cpu", "--poll", "60", "--max-parallel", str(count), "--no-live",
                                   "--slurm-shared-dir", str(root / "shared")],
                                  stdout=log, stderr=subprocess.STDOUT, env=cluster.env)
        try:
            def running() -> bool:
                if daemon.poll() is not None:
                    raise RuntimeError(f"daemon exited: {(root / 'daemon.log').read_text()[-2000:]}")
                return (root / "daemon.log").read_text().count("started run") >= count
            wait_for(running, 120, f"{count} runs in flight")
            if on_slurm:
                wait_for(lambda: len(list((root / "shared" / "runs").glob("*/slurm-1.log"))) >= count, 120,
                         "every job running")
            time.sleep(1.0)
            before = _cpu(daemon.pid)
            time.sleep(WINDOW)
            return (_cpu(daemon.pid) - before) / WINDOW
        finally:
            stop_daemon(daemon, log)   # (its runs are cancelled: the jobs with them)

    on_slurm, local = cpu_per_second(True), cpu_per_second(False)
    return Row(21, rows(ctx)[1], on_slurm * 100, "%", local * 100, f"the same daemon, {count} local runs in flight",
               note=f"CPU seconds per second × 100 over {WINDOW:g}s, the daemon and its children (squeue) together; "
                    "one squeue per poll (0.5s) follows every job")


def _cpu(pid: int) -> float:
    """utime + stime of `pid` and of its children it waited for, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / ticks
