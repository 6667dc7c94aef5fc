"""`puppemon validate [DIR]`: check puppemon.yaml and show how and when each flow runs."""
from __future__ import annotations

import dataclasses
import io
import sys
from datetime import datetime, timezone

from rich import box
from rich.console import Console
from rich.table import Table

from puppemon.manifest import MANIFEST_NAME, Flow, Manifest, load
from puppemon.schedule import describe, format_interval, next_fire


def next_run(flow: Flow, now: datetime) -> str:
    """When the flow runs next, for people: a local time with its zone, or what it waits for."""
    if flow.schedules:
        when = next_fire(dataclasses.replace(flow, every=None), now)   # the interval's grid starts at deploy
        return when.strftime("%Y-%m-%d %H:%M %Z")
    if flow.every:
        return f"{format_interval(flow.every)} after deploy"
    if flow.run_on_deploy:
        return "next deploy"
    return "on trigger"


def render(manifest: Manifest, now: datetime) -> list[str]:
    """The report as plain lines: a summary, then a table of flows."""
    count = len(manifest.flows)
    lines = [f"{MANIFEST_NAME} is valid: {count} flow{'' if count == 1 else 's'}"]
    if not count:
        return lines
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False, header_style="bold")
    for column in ("flow", "trigger", "next run"):
        table.add_column(column, no_wrap=True)
    for flow in manifest.flows.values():
        table.add_row(flow.name, describe(flow), next_run(flow, now))
    # Wide and colourless off a terminal, so the text does not depend on where it is printed.
    buffer = io.StringIO()
    Console(file=buffer, width=1000, color_system=None, legacy_windows=False).print(table)
    lines += [line.rstrip() for line in buffer.getvalue().splitlines()]
    return lines


def main(directory: str = ".", now: datetime | None = None) -> int:
    manifest = load(directory)
    now = now or datetime.now(timezone.utc)
    lines = render(manifest, now)
    if sys.stdout.isatty():
        console = Console()
        console.print(lines[0], style="green", highlight=False)
        console.print("\n".join(lines[1:]), highlight=False)
    else:
        print("\n".join(lines))
    return 0
