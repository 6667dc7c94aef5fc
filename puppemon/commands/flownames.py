"""Which flow names a read command knows, so a misspelled one is an error with a did-you-mean.

A name is known when it has runs recorded, is in the working tree's puppemon.yaml, or is
in the flows deployed on the remote (fetched only when the first two do not know it).
"""
from __future__ import annotations

from puppemon.errors import PuppemonError


def working_tree_flows(directory: str) -> list[str]:
    """The flows of the puppemon.yaml `directory` is in (none when there is none or it is invalid)."""
    from puppemon.project.manifest import ManifestError, load
    from puppemon.project.root import find_root

    try:
        return list(load(find_root(directory)).flows)
    except ManifestError:
        return []


def deployed_flows(store, remote: str, branch: str = "flows") -> list[str] | None:
    """The flows of the remote's deployed manifest ([] when nothing is deployed); None when it cannot be read."""
    from puppemon.commands.common import fetch_deployed
    from puppemon.gitstore import GitError
    from puppemon.project.manifest import MANIFEST_NAME, ManifestError, parse

    try:
        _tip, data = fetch_deployed(store, remote, branch, timeout=60)
    except GitError:
        return None
    try:
        return list(parse(data, MANIFEST_NAME).flows) if data is not None else []
    except ManifestError:
        return []


def check_known(flow: str, recorded: list[str], store, remote: str | None, directory: str,
                fetch: bool | None) -> None:
    """Raise, with a did-you-mean, when `flow` has no runs and is neither in puppemon.yaml nor deployed."""
    from puppemon.commands.common import hint_flows

    known = set(recorded) | set(working_tree_flows(directory))
    if flow in known:
        return
    where = "recorded or in puppemon.yaml"
    if remote is not None and fetch is not False:
        deployed = deployed_flows(store, remote)
        if deployed is not None:
            if flow in deployed:
                return
            known |= set(deployed)
            where = f"recorded, deployed on {remote} or in puppemon.yaml"
    raise PuppemonError(f"no flow {flow!r} is {where}" + hint_flows(flow, known))
