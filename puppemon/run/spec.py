"""What a run is asked to do (RunSpec) and what came of it (RunResult), whatever backend ran it."""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from puppemon.project.manifest import Flow
from puppemon.run.environments import Environment
from puppemon.run.users import OSUser


@dataclass
class RunSpec:
    """Everything one run needs; `params` are merged over the flow's own."""

    run_id: str
    flow: Flow
    code_dir: Path
    params: dict
    flows_commit: str = ""
    variables: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str | dict] = field(default_factory=dict)
    workdir: str | None = None          # overrides the flow's `workdir:` (`puppemon run` runs in place)
    log_limit: int = 5 * 1024**2
    outputs_limit: int = 20 * 1024**2
    grace: float = 10.0                 # SIGTERM -> SIGKILL on timeout or cancel
    base_env: dict | None = None        # the environment runs inherit (default: this process's)
    backend: Any = "local"              # where it executes: a name in run/backends.py, or a configured Backend
    user: OSUser | None = None          # the OS user it runs as (None: this process's); the caller checked the grant
    environment: Environment | None = None   # its Python environment (run/environments.py); None: this Python
    flow_api: Path | None = None        # with an environment: the directory that makes `import puppemon` work
    trigger: dict = field(default_factory=dict)   # what started it ({"kind": "schedule"}, ...): PUPPEMON_TRIGGER
    scheduled: datetime | None = None   # the fire it stands for (clock kinds, backfill): PUPPEMON_SCHEDULED_TIME
    trigger_data: dict = field(default_factory=dict)   # what a trigger gives the run, too big for its record


class PauseSwitch:
    """Asks a run in flight to freeze or go on (any thread may `set` it). The runner's own thread
    applies it between polls, through the backend's `pause` and `resume`; paused time does not count
    towards the timeout, and a run paused longer than `limit` seconds is cancelled."""

    def __init__(self, limit: float | None = None) -> None:
        self.limit = limit
        self.since: float | None = None    # time.monotonic() when the runner froze it; None when running
        self._wanted = threading.Event()

    def set(self, paused: bool) -> None:
        (self._wanted.set if paused else self._wanted.clear)()

    @property
    def wanted(self) -> bool:
        return self._wanted.is_set()


@dataclass
class Attempt:
    number: int
    status: str
    exit_code: int | None
    started: datetime
    finished: datetime
    duration: float


@dataclass
class Output:
    path: str
    size: int
    sha256: str
    data: bytes
    executable: bool


@dataclass
class RunResult:
    run_id: str
    flow: str
    status: str
    exit_code: int | None
    attempts: list[Attempt]
    started: datetime
    finished: datetime
    duration: float
    log: bytes
    result: Any
    has_result: bool
    outputs: list[Output]
    outputs_note: str | None
    error: str | None
    params: dict
    escaped: int = 0    # processes it left running outside its process group, stopped at its end
