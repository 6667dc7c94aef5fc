"""The registry of run backends: a name (server configuration, the journal) -> its class."""
from __future__ import annotations

from puppemon.errors import PuppemonError
from puppemon.run.backend import Backend
from puppemon.run.container import ContainerBackend
from puppemon.run.local import LocalBackend
from puppemon.run.slurm import SlurmBackend

BACKENDS: dict[str, type] = {
    "local": LocalBackend,
    "container": ContainerBackend,
    "slurm": SlurmBackend,
}

_instances: dict[str, Backend] = {}


def get(name: str) -> Backend:
    """The backend called `name`."""
    if name not in _instances:
        if name not in BACKENDS:
            raise PuppemonError(f"no run backend {name!r} (known: {', '.join(sorted(BACKENDS))})")
        _instances[name] = BACKENDS[name]()
    return _instances[name]
