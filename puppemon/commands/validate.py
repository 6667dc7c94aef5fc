"""`puppemon validate [DIR]`: check puppemon.yaml and show how and when each flow runs."""
from __future__ import annotations

from datetime import datetime, timezone

from puppemon.project.manifest import MANIFEST_NAME, Manifest, load
from puppemon.project.triggers import describe, next_fire, next_run
from puppemon.ui import Column, print_lines, print_table

# On a narrow terminal the trigger wraps (down to 30 cells), then the next run goes; the flow stays.
COLUMNS = (Column("flow"), Column("trigger", wrap=True, least=30), Column("next run", drop=1))


def render(manifest: Manifest, now: datetime) -> tuple[str, list[list[str]]]:
    """The summary line and a row per flow: its name, trigger and next run."""
    count = len(manifest.flows)
    summary = f"{MANIFEST_NAME} is valid: {count} flow{'' if count == 1 else 's'}"
    return summary, [[flow.name, describe(flow), next_run(flow, now)] for flow in manifest.flows.values()]


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


def json_shape(manifest: Manifest, now: datetime, hints: list[str]) -> dict:
    """`validate --json` of a valid manifest (docs/json.md)."""
    from puppemon.formats import utc_iso

    flows = []
    for flow in manifest.flows.values():
        # cron lines and intervals (anchored to the epoch) have times of their own; on deploy waits for one
        moment = next_fire(flow, now)
        flows.append({"name": flow.name, "trigger": describe(flow), "kinds": [t.kind for t in flow.triggers],
                      "timezone": flow.timezone, "next_run": utc_iso(moment) if moment else None,
                      "next_run_text": next_run(flow, now)})
    from puppemon.project.chains import chains

    return {"manifest": MANIFEST_NAME, "valid": True, "error": None, "flows": flows,
            "chains": [line.split(" -> ") for line in chains(manifest)], "hints": hints}


def main(directory: str = ".", now: datetime | None = None, as_json: bool = False) -> int:
    """Check the manifest and print a summary and a table (or, with `as_json`, one JSON object)."""
    from puppemon.errors import PuppemonError
    from puppemon.project.entrypoints import check_manifest, directory_reader
    from puppemon.project.root import find_root

    try:
        root = find_root(directory)
        manifest = load(root)
        check_manifest(manifest, directory_reader(root), MANIFEST_NAME, "the project directory")
    except PuppemonError as exc:
        if not as_json:
            raise
        import json

        print(json.dumps({"manifest": MANIFEST_NAME, "valid": False, "error": exc.message, "flows": [], "chains": [],
                          "hints": []}, indent=2, ensure_ascii=False))
        return 1
    now = now or datetime.now(timezone.utc)
    if as_json:
        import json

        print(json.dumps(json_shape(manifest, now, unused_dependency_files(manifest, root)), indent=2,
                         ensure_ascii=False))
        return 0
    summary, rows = render(manifest, now)
    print_lines([[(summary, "green")]])
    if rows:
        print_table(COLUMNS, rows, header_style="bold")
    from puppemon.project.chains import chains

    print_lines([[f"chain: {line}"] for line in chains(manifest)])   # after: between flows
    hints = unused_dependency_files(manifest, root)
    if hints:
        print_lines([[hint] for hint in hints])
    return 0
