"""Shell completion of flow names and run ids, from the local repository only (no fetch).

Called by click while the user presses Tab: it must be fast and never fail, so any
error completes nothing. Flow names come from the working tree's puppemon.yaml (read
as plain YAML, not validated), run ids from the local `runs` branch and its archives.
"""
from __future__ import annotations

from pathlib import Path

RECENT = 200   # run ids offered at most: the newest that match


def flow_names(directory: str, incomplete: str) -> list[str]:
    """The flows of the puppemon.yaml in (or above) `directory` that start with `incomplete`."""
    try:
        import yaml

        from puppemon.project.root import MANIFEST_NAME, find_root

        path = Path(find_root(directory)) / MANIFEST_NAME
        if not path.is_file() or path.stat().st_size > 1024**2:
            return []
        flows = (yaml.safe_load(path.read_text(encoding="utf-8", errors="replace")) or {}).get("flows") or {}
        return sorted(name for name in flows if isinstance(name, str) and name.startswith(incomplete))
    except Exception:  # noqa: BLE001 - a half-written manifest completes nothing, and never a traceback
        return []


def run_ids(directory: str, incomplete: str) -> list[str]:
    """The newest run ids on the local runs branch that start with `incomplete`."""
    try:
        from puppemon.gitstore import Store
        from puppemon.history.records import RunStore

        runs = RunStore(Store.discover(directory), "refs/heads/runs")
        if not runs.tip and not runs.archives:
            return []
        return runs.recent_ids(RECENT, incomplete)
    except Exception:  # noqa: BLE001 - not a repository, no runs branch: nothing to offer
        return []
