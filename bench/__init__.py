"""puppemon's benchmarks: `python -m bench [--quick] [--only NAME]`.

Every figure is a median over repeated runs, next to a baseline measured in the
same run (what git, Python or the OS do alone), reported as a ratio with the goal
from the design and a tick or a cross.
"""
from __future__ import annotations

from importlib import import_module

# --only names, in table order; each module has rows(ctx) and measure(ctx).
FIGURES = {
    "cli": "bench.fig_cli",
    "push": "bench.fig_push",
    "record": "bench.fig_record",
    "read": "bench.fig_read",
    "growth": "bench.fig_growth",
    "lateness": "bench.fig_daemon",
    "overhead": "bench.fig_daemon",
    "trigger": "bench.fig_trigger",
    "idle": "bench.fig_idle",
    "env-run": "bench.fig_envs",
    "env-build": "bench.fig_envs",
    "env-redeploy": "bench.fig_envs",
    "env-lateness": "bench.fig_env_lateness",
    "scale": "bench.fig_scale",
    "scale-1m": "bench.fig_scale",
    "memory": "bench.fig_memory",
    "http-scale": "bench.fig_memory",
    "live": "bench.fig_live",
    "claims": "bench.fig_claims",
    "containers": "bench.fig_containers",
    "slurm": "bench.fig_slurm",
    "ui": "bench.fig_ui",
}
OPT_IN = {"scale-1m", "claims", "containers", "slurm"}   # only when named with --only (minutes, podman, Slurm)


def figure_module(name: str):
    return import_module(FIGURES[name])
