"""Figure 4: `puppemon runs --limit 50` and `puppemon logs <id>` at 100,000 runs, against
`git log -50 --format=%s runs` and `git show runs:<path>/log.txt` on the same repository."""
from __future__ import annotations

from bench.common import Context, Row

GOAL = 0.3


def size(ctx: Context) -> int:
    return 1_000 if ctx.quick else 100_000


def rows(ctx: Context) -> list[str]:
    return [f"puppemon runs --limit 50 ({size(ctx):,} runs)", f"puppemon logs <id> ({size(ctx):,} runs)"]


def available() -> list[str]:
    from puppemon.cli import cli

    return [name for name in ("runs", "logs") if name not in cli.commands]


def measure(ctx: Context) -> list[Row]:
    missing = available()
    if missing:
        return [Row(4, label, None, "s", goal=f"≤ {GOAL:g} s",
                    note=f"not measured: this puppemon has no `{' / '.join(missing)}` command")
                for label in rows(ctx)]
    raise NotImplementedError
