"""`puppemon validate [DIR]`: check puppemon.yaml and show how and when each flow runs."""
from __future__ import annotations

import io
import sys
from datetime import datetime, timezone

from rich import box
from rich.console import Console
from rich.table import Table

from puppemon.project.manifest import MANIFEST_NAME, Manifest, load
from puppemon.project.triggers import describe, next_run


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


def unused_dependency_files(manifest: Manifest, root) -> list[str]:
    """A hint for a requirements.txt or pyproject.toml at the project's root that no flow's `python:` uses."""
    from pathlib import Path

    used = {f.python.path for f in manifest.flows.values() if f.python is not None and f.python.path}
    hints = []
    if (Path(root) / "requirements.txt").is_file() and "requirements.txt" not in used:
        hints.append("hint: requirements.txt is not used by any flow; flows run with the daemon's Python "
                     "unless they say `python: {requirements: requirements.txt}`")
    if (Path(root) / "pyproject.toml").is_file() and "." not in used:
        hints.append("hint: pyproject.toml is not used by any flow; with a uv.lock, `python: {project: .}` "
                     "installs it for a flow")
    return hints


def main(directory: str = ".", now: datetime | None = None) -> int:
    from puppemon.project.entrypoints import check_manifest, directory_reader
    from puppemon.project.manifest import find_root

    root = find_root(directory)
    manifest = load(root)
    check_manifest(manifest, directory_reader(root), MANIFEST_NAME, "the project directory")
    now = now or datetime.now(timezone.utc)
    lines = render(manifest, now) + unused_dependency_files(manifest, root)
    if sys.stdout.isatty():
        console = Console()
        console.print(lines[0], style="green", highlight=False)
        console.print("\n".join(lines[1:]), highlight=False)
    else:
        print("\n".join(lines))
    return 0
