"""The seam between the runner and the place a run's process executes: the Backend protocol.

The runner (runner.py) owns everything a run has whatever executes it: the
workspace, the environment, retries, timeouts, the log and the outputs. A backend
owns one thing: starting one attempt somewhere and giving back its output, its exit
status and a way to stop it. `local` (local.py) runs a process group on this
machine; a container engine or a cluster scheduler is one more class.

Adding a backend: one module with a class satisfying `Backend`, one line in
backends.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

from puppemon.project.manifest import Flow
from puppemon.run.users import OSUser


@dataclass(frozen=True)
class Launch:
    """One attempt to start: what to run, where, with which environment."""

    run_id: str
    attempt: int
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    flow: Flow          # a backend reads its own settings from the flow
    grace: float        # how long a stop waits between asking (SIGTERM) and forcing (SIGKILL)
    user: OSUser | None = None   # run as this OS user (None: as this process)


class StartFailed(Exception):
    """The attempt could not start at all (no such program, not executable, ...)."""

    def __init__(self, exit_code: int, error: str) -> None:
        super().__init__(error)
        self.exit_code, self.error = exit_code, error


class Execution(Protocol):
    """A started attempt. Only `kill` may be called from another thread."""

    escaped: int | None  # once it is over: how many processes it left running outside what `kill` reaches
    # A backend that knows better than the exit status why an attempt failed (a container killed for going
    # over its memory) may also set `reason: str | None` once it is over; the run's error is then that.

    @property
    def running(self) -> bool:
        """True until the attempt's main process has exited."""

    def wait(self, timeout: float) -> int | None:
        """Pass output on for up to `timeout` seconds; the exit status once the attempt is over
        (its main process exited, whatever it started is gone, its output read), else None.
        A negative status is the signal that killed it."""

    def stop(self) -> None:
        """Ask it to stop now (SIGTERM); `wait` forces it (SIGKILL) after the launch's grace."""

    def kill(self) -> None:
        """Force it to stop now (SIGKILL)."""

    def pause(self) -> None:
        """Freeze it (SIGSTOP) where the backend can. The runner calls it (from the run's own thread) and
        stops counting the run's timeout until `resume`; `stop` must reach a frozen attempt too."""

    def resume(self) -> None:
        """Let a paused attempt go on."""

    def handle(self) -> dict:
        """What crash recovery needs to find it again (JSON, kept in the daemon's journal)."""

    def close(self) -> None:
        """Release what it holds; kill what is left if it did not end (an exception, say)."""


class Backend(Protocol):
    """Where runs execute."""

    name: str

    def start(self, launch: Launch, output: Callable[[bytes], None]) -> Execution:
        """Start one attempt, passing its output (stdout and stderr interleaved) to `output`."""

    def recover(self, handle: dict) -> str | None:
        """Stop what an attempt left running when its daemon died; say what was stopped, or None."""

    # A backend whose attempts outlive their daemon (a cluster scheduler's job) may also define
    # `reattach(handle, grace) -> Execution | None`: the attempt a killed daemon left running (its journal's
    # handle), to follow on after a restart (daemon/recovery.py); that Execution says its run's `area` and its
    # `attempt` number, and gets its `output` set before the first `wait` (runner.resume).
    # A backend whose runs outlive their daemon (a cluster scheduler's job) may also define
    # `outlives(handle) -> bool`: True while the job still runs. Another daemon then leaves a gone
    # daemon's run to be adopted instead of recording it crashed (daemon/peers.py `adoptable`); the
    # handle has to be in the daemon's status (`in_flight`) for that.
