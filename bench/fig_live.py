"""Figure 17: a line printed by a run → the same line shown by `puppemon logs -f`, through git alone
(the daemon's live ref, the HTTP hook off). The run prints its wall-clock time on each line, a line
every 0.7 s; the follower's reader notes when each line reaches it. Median over the lines, against
the daemon's --live-interval (the most a line waits for the next push while output keeps coming).
The same over the daemon's HTTP hook (`logs -f --http URL`, the daemon started with --no-live, so
every line came that way)."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

from bench.common import Context, Row, median, puppemon_argv, run, stop_daemon
from bench.fig_daemon import deploy_project
from bench.fig_idle import wait_for
from bench.fig_trigger import free_port

SLACK = 2.0   # the goal: interval + this, the follower's poll (1 s) and a fetch and a push included
HTTP_GOAL = 0.5


def interval(ctx: Context) -> float:
    return 1.0 if ctx.quick else 5.0


def lines(ctx: Context) -> int:
    return 8 if ctx.quick else 30


def manifest(ctx: Context) -> str:
    code = (f"import time\\nfor i in range({lines(ctx)}):\\n    print(repr(time.time()), flush=True)\\n"
            "    time.sleep(0.7)\\n")
    return f'version: 1\nflows:\n  ticks:\n    command: ["{sys.executable}", "-c", "{code}"]\n'


def rows(ctx: Context) -> list[str]:
    return ["line printed → shown by logs -f, through git", "line printed → shown by logs -f --http"]


def delays(ctx: Context, name: str, daemon_args: list[str], follow_args: list[str]) -> list[float]:
    """Run the flow once under a daemon started with `daemon_args`; each line's delay to `logs -f`."""
    root = ctx.dir(f"live-{name}")
    remote = deploy_project(root, manifest(ctx))
    project = root / "project"
    log = open(root / "daemon.log", "wb")
    daemon = subprocess.Popen([*puppemon_argv(), "daemon", "--remote", str(remote), "--state", str(root / "state"),
                               "--name", "live", "--poll", "1", *daemon_args], stdout=log, stderr=subprocess.STDOUT)
    seen: list[tuple[float, bytes]] = []
    try:
        if follow_args:   # the HTTP hook: wait for it to listen
            wait_for(lambda: b"HTTP hook listening" in (root / "daemon.log").read_bytes(), 30, "the HTTP hook")
        request = run([*puppemon_argv(), "trigger", "ticks"], cwd=project).stdout.decode().strip()
        follower = subprocess.Popen([*puppemon_argv(), "logs", "-f", *follow_args, request], cwd=project,
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
    if len(seen) != lines(ctx):
        raise RuntimeError(f"logs -f showed {len(seen)} lines of {lines(ctx)}")
    return [at - float(line) for at, line in seen]


def measure(ctx: Context) -> list[Row]:
    every = interval(ctx)
    label_git, label_http = rows(ctx)
    through_git = delays(ctx, "git", ["--live-interval", f"{every:g}"], [])
    port = free_port()
    over_http = delays(ctx, "http", ["--no-live", "--listen", f"127.0.0.1:{port}"],
                       ["--http", f"http://127.0.0.1:{port}"])
    value, http = median(through_git), median(over_http)
    return [Row(17, label_git, value, "s", every, "daemon --live-interval", f"≤ interval + {SLACK:g} s",
                value <= every + SLACK, note=f"{len(through_git)} lines; max {max(through_git):.2f} s"),
            Row(17, label_http, http, "s", None, "", f"≤ {HTTP_GOAL:g} s", http <= HTTP_GOAL,
                note=f"--no-live: the tail over HTTP only; max {max(over_http):.2f} s")]
