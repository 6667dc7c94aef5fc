"""`puppemon env FLOW`: the Python environment a flow runs in, built here as the daemon builds it."""
from __future__ import annotations

import os
from pathlib import Path

from puppemon.errors import PuppemonError


def cache_root() -> Path:
    """Where `puppemon run` and `puppemon env` keep environments: the user's cache directory."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "puppemon" / "envs"


def local_environment(flow, project: Path, rebuild: bool = False):
    """(Environment, flow API directory) of `flow` in `project`, built when it is not cached yet."""
    from puppemon.project.entrypoints import directory_reader
    from puppemon.run.environments import EnvStore, flow_api, request_for

    store = EnvStore(cache_root())
    try:
        request = request_for(flow, project, directory_reader(project))
    except ValueError as exc:
        raise PuppemonError(f"flows.{flow.name}.python: {exc}") from None
    return store.ensure(request, rebuild=rebuild), flow_api(store.root)


def main(flow: str, directory: str = ".", rebuild: bool = False) -> int:
    from puppemon.commands.common import load_flow
    from puppemon.project.root import find_root

    project = find_root(directory)
    _, found = load_flow(project, flow)
    if found.python is None:
        import sys

        print(f"{flow}: python: system (runs with {sys.executable}, nothing to build)")
        return 0
    env, _ = local_environment(found, project, rebuild)
    print(f"{flow}: {found.python.describe()}")
    print(f"  environment {env.key}, Python {env.python}")
    print(f"  {env.path}")
    for package in env.packages or ("(no packages)",):
        print(f"  {package}")
    return 0
