"""Figure 17: a line printed by a run → the same line shown by `puppemon logs -f`, through git alone
(the daemon's live ref, the HTTP hook off). The run prints its wall-clock time on each line, a line
every 0.7 s; the follower's reader notes when each line reaches it. Median over the lines, against
the daemon's --live-interval (the most a line waits for the next push while output keeps coming)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

from bench.common import Context, Row, median, puppemon_argv, run, stop_daemon
from bench.fig_daemon import deploy_project

SLACK = 2.0   # the goal: interval + this, the follower's poll (1 s) and a fetch and a push included


def interval(ctx: Context) -> float:
    return 1.0 if ctx.quick else 5.0


def lines(ctx: Context) -> int:
    return 8 if ctx.quick else 30


def manifest(ctx: Context) -> str:
    code = (f"import time\\nfor i in range({lines(ctx)}):\\n    print(repr(time.time()), flush=True)\\n"
            "    time.sleep(0.7)\\n")
    return f'version: 1\nflows:\n  ticks:\n    command: ["{sys.executable}", "-c", "{code}"]\n'


def rows(ctx: Context) -> list[str]:
    return ["line printed → shown by logs -f, through git"]


def measure(ctx: Context) -> list[Row]:
    root = ctx.dir("live")
    remote = deploy_project(root, manifest(ctx))
    project = root / "project"
    every = interval(ctx)
    log = open(root / "daemon.log", "wb")
    daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state", str(root / "state"),
                               "--name", "live", "--poll", "1", "--live-interval", f"{every:g}"],
                              stdout=log, stderr=subprocess.STDOUT)
    seen: list[tuple[float, bytes]] = []
    try:
        request = run([*puppemon_argv(), "trigger", "ticks"], cwd=project).stdout.decode().strip()
        follower = subprocess.Popen([*puppemon_argv(), "logs", "-f", request], cwd=project,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)

        def read() -> None:
            for line in follower.stdout:
                seen.append((time.time(), line))

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        follower.wait(120)
        reader.join(10)
    finally:
        stop_daemon(daemon, log)
    delays = [at - float(line) for at, line in seen]
    if len(delays) != lines(ctx):
        raise RuntimeError(f"logs -f showed {len(delays)} lines of {lines(ctx)}")
    value = median(delays)
    return [Row(17, rows(ctx)[0], value, "s", every, "daemon --live-interval", f"≤ interval + {SLACK:g} s",
                value <= every + SLACK, note=f"{len(delays)} lines; max {max(delays):.2f} s")]
