"""Figure 9: an idle `puppemon daemon` with 20 cron flows far in the future, measured
over a window with no fetch in it (--poll longer than the window): resident memory
(VmRSS) at the end and CPU (utime + stime) spent in the window, against a bare
`python -c "import time; time.sleep(...)"` measured alongside."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import stop_daemon, Context, Row, git, puppemon_argv
from bench.fig_daemon import deploy_project

RSS_GOAL = 50 * 2**20
CPU_GOAL = 0.5  # percent of one core: "about zero"
FLOWS = 20


def window(ctx: Context) -> float:
    return 5.0 if ctx.quick else 60.0


def rows(ctx: Context) -> list[str]:
    return [f"idle daemon, {FLOWS} flows: RSS", f"idle daemon, {FLOWS} flows: CPU over {window(ctx):g} s"]


def manifest() -> str:
    flows = "".join(f"  job-{i:02d}:\n    command: [\"true\"]\n    schedule: \"{i} 3 1 1 *\"\n"
                    for i in range(FLOWS))
    return f"version: 1\nflows:\n{flows}"


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def cpu(pid: int) -> float:
    """utime + stime of `pid` itself, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def measure(ctx: Context) -> list[Row]:
    root = ctx.dir("idle")
    remote = deploy_project(root, manifest())
    span = window(ctx)
    log = open(root / "daemon.log", "wb")
    daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state",
                               str(root / "state"), "--name", "idle", "--poll", str(int(span * 5 + 60))],
                              stdout=log, stderr=subprocess.STDOUT)
    sleeper = None
    try:
        def ready() -> bool:
            if daemon.poll() is not None:
                raise RuntimeError(f"daemon exited {daemon.returncode}: {(root / 'daemon.log').read_text()[-2000:]}")
            return bool(git("--git-dir", str(remote), "for-each-ref", "refs/puppemon/status/"))
        wait_for(ready, 60, "the daemon's first status")
        time.sleep(1.0)  # let the first cycle's tail (status push, logging) settle
        sleeper = subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({span + 30})"])
        time.sleep(0.5)
        c0, b0, t0 = cpu(daemon.pid), cpu(sleeper.pid), time.monotonic()
        time.sleep(span)
        c1, b1, t1 = cpu(daemon.pid), cpu(sleeper.pid), time.monotonic()
        mem, base_mem = rss(daemon.pid), rss(sleeper.pid)
    finally:
        stop_daemon(daemon, log)
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
    elapsed = t1 - t0
    pct, base_pct = 100 * (c1 - c0) / elapsed, 100 * (b1 - b0) / elapsed
    labels = rows(ctx)
    return [
        Row(9, labels[0], mem, "MB", base_mem, "python sleeping", f"≤ {RSS_GOAL // 2**20} MB", mem <= RSS_GOAL),
        Row(9, labels[1], pct, "%", base_pct, "python sleeping", f"≈ 0 % (≤ {CPU_GOAL:g} %)", pct <= CPU_GOAL,
            ratio=None if base_pct == 0 else pct / base_pct,
            note=f"{(c1 - c0) * 1000:.0f} ms of CPU in {elapsed:.0f} s; no fetch in the window"),
    ]
