"""puppemon: a git-native automation runner.

Flow code may import this module to read its run context::

    import puppemon
    puppemon.params()          # the run's parameters (a dict)
    puppemon.output_dir()      # a pathlib.Path; files left there are recorded
    puppemon.secret("name")    # a secret granted to this flow (str, or dict)
    puppemon.variable("NAME")  # a variable from the manifest
    puppemon.trigger()         # what started the run: {"kind": "schedule", "scheduled_time": ...}
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "params", "output_dir", "secret", "variable", "run_id", "trigger", "env_name"]


def env_name(name: str) -> str:
    """The environment variable a secret named `name` is delivered in (`discord-chat` -> `DISCORD_CHAT`)."""
    return re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def _require(var: str) -> str:
    value = os.environ.get(var)
    if value is None:
        raise RuntimeError(f"{var} is not set: this code is not running inside a puppemon run")
    return value


def run_id() -> str:
    """The id of the current run."""
    return _require("PUPPEMON_RUN_ID")


def params() -> dict[str, Any]:
    """The parameters of the current run."""
    return json.loads(os.environ.get("PUPPEMON_PARAMS") or "{}")


def output_dir() -> Path:
    """The directory whose files are recorded with the run."""
    return Path(_require("PUPPEMON_OUTPUT_DIR"))


def secret(name: str) -> Any:
    """A secret granted to this flow: a str, or a dict for a structured secret."""
    value = os.environ.get(env_name(name))
    if value is None:
        raise KeyError(f"secret {name!r} was not given to this run; list it under the flow's "
                       f"`secrets:` and grant it to the flow in the server's secrets file")
    if value.startswith("{"):
        try:
            decoded = json.loads(value)
        except ValueError:
            return value
        if isinstance(decoded, dict):
            return decoded
    return value


def variable(name: str, default: Any = None) -> Any:
    """A variable from the manifest's `variables:` section."""
    return os.environ.get(name, default)


def trigger() -> dict[str, Any]:
    """What started the current run: its `kind` (schedule, catchup, request, deploy, ...), the fire it
    stands for as `scheduled_time` (UTC ISO 8601, None when no clock decided it) and what the kind adds
    (`files`: the absolute paths of the files an `on_file:` run is for; `upstream`: for an `after:` run, the
    run that ended, its id, flow, status and its `result` when it passed one)."""
    data = json.loads(os.environ.get("PUPPEMON_TRIGGER") or "{}")
    data.setdefault("scheduled_time", os.environ.get("PUPPEMON_SCHEDULED_TIME"))
    result = os.environ.get("PUPPEMON_UPSTREAM_RESULT")
    if isinstance(data.get("upstream"), dict) and result is not None:   # after: the upstream run's result
        data["upstream"]["result"] = json.loads(result)
    return data
