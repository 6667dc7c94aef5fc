"""Figure 1: `puppemon --help` and `--version` start-up time against a bare interpreter."""
from __future__ import annotations

import sys

from bench.common import Context, Row, interleaved, median, puppemon_argv, run

GOAL = 4.0


def rows(ctx: Context) -> list[str]:
    return ["puppemon --help", "puppemon --version"]


def measure(ctx: Context) -> list[Row]:
    cli = puppemon_argv()
    repeat = 7 if ctx.quick else 25
    times = interleaved({
        "help": lambda: run([*cli, "--help"]),
        "version": lambda: run([*cli, "--version"]),
        "bare": lambda: run([sys.executable, "-c", "pass"]),
    }, repeat=repeat, warmup=2)
    base = median(times["bare"])
    out = []
    for key, label in (("help", "puppemon --help"), ("version", "puppemon --version")):
        value = median(times[key])
        out.append(Row(1, label, value, "s", base, "python -c pass", f"≤ {GOAL:g}×",
                       value / base <= GOAL))
    return out
