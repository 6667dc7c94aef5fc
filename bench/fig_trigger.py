"""Figure 8: trigger → completed, over HTTP and with `puppemon trigger --wait`."""
from __future__ import annotations

from bench.common import Context, Row


def rows(ctx: Context) -> list[str]:
    return ["trigger → completed over HTTP", "trigger → completed, puppemon trigger --wait"]


def measure(ctx: Context) -> list[Row]:
    from puppemon.cli import cli

    if "trigger" not in cli.commands:
        return [Row(8, label, None, "s", note="not measured: this puppemon has no `trigger` command")
                for label in rows(ctx)]
    raise NotImplementedError
