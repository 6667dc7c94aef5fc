"""Figure 1: start-up of `puppemon --help`, `--version` and of every read-only command against a bare
interpreter. The read commands run in a project with three flows (cron, interval, on deploy) whose
clone holds a runs branch of 2,000 records (200 with --quick) and a daemon's status, their output a
pipe, as a script reads it; `runs`, `logs` and `status` with --no-fetch (what a fetch costs is
figure 4's business)."""
from __future__ import annotations

import sys
from pathlib import Path

from bench import history
from bench.common import Context, Row, git, interleaved, median, puppemon_argv, run

START_GOAL = {"help": 3.0, "version": 4.0}
READ_GOAL = 5.0

MANIFEST = """\
version: 1
flows:
  report:
    command: echo report
    schedule: ["0 8 * * 1-5", "30 14 * * sun"]
    timezone: Asia/Taipei
  backup:
    command: echo backup
    every: 6h
  index:
    command: echo index
    run_on_deploy: true
"""


def runs_count(ctx: Context) -> int:
    return 200 if ctx.quick else 2_000


def read_commands(ctx: Context) -> list[tuple[str, list[str]]]:
    target = history.record(runs_count(ctx) // 2)["id"]
    return [("validate", ["validate"]),
            ("runs", ["runs", "--no-fetch"]),
            ("logs", ["logs", "--no-fetch", target]),
            ("status", ["status", "--no-fetch"])]


def rows(ctx: Context) -> list[str]:
    return ["puppemon --help", "puppemon --version", "puppemon validate", "puppemon runs --no-fetch",
            "puppemon logs --no-fetch <id>", "puppemon status --no-fetch"]


def make_project(ctx: Context) -> Path:
    """A committed project with three flows, pushed, whose clone has the runs branch and a status ref."""
    root = ctx.dir("cli")
    remote, project = root / "remote.git", root / "project"
    git("init", "--bare", "--quiet", str(remote))
    history.build(remote, 0, runs_count(ctx))
    git("init", "--quiet", str(project))
    (project / "puppemon.yaml").write_text(MANIFEST)
    git("add", "-A", cwd=project)
    git("commit", "--quiet", "-m", "three flows", cwd=project)
    git("remote", "add", "origin", str(remote), cwd=project)
    cli = puppemon_argv()
    run([*cli, "push"], cwd=project)
    tip = git("--git-dir", str(remote), "rev-parse", "flows").strip()
    status = ('{"schema": 1, "name": "box", "host": "server", "pid": 1, "version": "0.1.0", '
              '"started": "2026-01-01T00:00:00.000Z", "heartbeat": "2026-01-01T00:00:00.000Z", '
              f'"state": "running", "flows_commit": "{tip}", "flows": {{}}, "in_flight": [], "unpublished": 0}}\n')
    blob = git("--git-dir", str(remote), "hash-object", "-w", "--stdin", input=status.encode()).strip()
    tree = git("--git-dir", str(remote), "mktree", input=f"100644 blob {blob}\tstatus.json\n".encode()).strip()
    commit = git("--git-dir", str(remote), "commit-tree", tree, "-m", "status").strip()
    git("--git-dir", str(remote), "update-ref", "refs/puppemon/status/box", commit)
    run([*cli, "status", "--fetch"], cwd=project)      # the runs branch and the status, once
    return project


def measure(ctx: Context) -> list[Row]:
    cli = puppemon_argv()
    project = make_project(ctx)
    repeat = 7 if ctx.quick else 21
    commands = read_commands(ctx)
    fns = {
        "help": lambda: run([*cli, "--help"]),
        "version": lambda: run([*cli, "--version"]),
        "bare": lambda: run([sys.executable, "-c", "pass"]),
    }
    for key, args in commands:
        fns[key] = lambda args=args: run([*cli, *args], cwd=project)
    times = interleaved(fns, repeat=repeat, warmup=2)
    base = median(times["bare"])
    labels = rows(ctx)
    out = []
    for key, label in (("help", labels[0]), ("version", labels[1])):
        value = median(times[key])
        out.append(Row(1, label, value, "s", base, "python -c pass", f"≤ {START_GOAL[key]:g}×",
                       value / base <= START_GOAL[key]))
    for (key, _), label in zip(commands, labels[2:]):
        value = median(times[key])
        note = f"{runs_count(ctx):,} runs on the branch; output to a pipe" if key != "validate" else \
            "3 flows: cron (two lines, Asia/Taipei), every 6h, on deploy"
        out.append(Row(1, label, value, "s", base, "python -c pass", f"≤ {READ_GOAL:g}×",
                       value / base <= READ_GOAL, note=note))
    return out
