"""The seam between the daemon and its trigger sources (sources.py SOURCES): what a source gets (SourceContext)
and what the daemon calls on it (Source, whose calls do nothing unless a source says otherwise)."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from puppemon.daemon.deployer import Deployment
from puppemon.daemon.journal import StateDir
from puppemon.daemon.queue import Pending
from puppemon.gitstore import Store


@dataclass
class SourceContext:
    """What a source gets from the daemon: where to submit runs, the state directory, the clock; the runs
    branch as the daemon has it (`store`, `runs_tip()`), and which flows it takes (`takes(flow)`)."""

    submit: Callable[[Pending], str | None]
    state: StateDir
    clock: Callable[[], datetime]
    store: Store | None = None                               # the daemon's mirror
    runs_tip: Callable[[], str | None] = lambda: None       # the local runs tip (the remote's, and unpublished records)
    ready: Callable[[], bool] = lambda: True                 # the daemon has seen who else is there (daemon/peers.py)
    takes: Callable[[object], bool] = lambda _flow: True
    # each flow's last fire recorded or claimed on the runs branch (history/baseline.py), for --once
    last_fires: Callable[[list[str]], dict[str, datetime]] = lambda _flows: {}
    misfire_grace: float = 60.0     # --once: a fire this late is still due now (settings.misfire_grace)


class Source:
    """What the daemon calls on each source; every call does nothing unless the source says otherwise."""

    def start(self) -> None:
        """Begin listening (a daemon that runs `--once` never calls this)."""

    def reconcile(self, deployment: Deployment, summary: dict[str, dict]) -> None:
        """A deploy was swapped in (also when a restart resumes it): follow its manifest, and add
        what this source knows about each flow to `summary` (the deploy record's `flows`)."""

    def deployed(self, deployment: Deployment) -> None:
        """A new deploy was swapped in and recorded (not a restart resuming one)."""

    def catch_up(self, deployment: Deployment, once: bool) -> None:
        """Submit what came due while no daemon was running."""

    def cycle(self) -> None:
        """Each cycle, after the fetch: submit what the runs tip shows is due."""

    def recorded(self, record: dict) -> None:
        """This daemon recorded a run (run.json), in the thread that recorded it."""

    def upcoming(self) -> dict[str, str | None]:
        """Each flow's next fire time this source knows (UTC ISO), for the status ref."""
        return {}

    def close(self) -> None:
        """Stop listening."""
