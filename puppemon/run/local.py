"""The `local` backend: each attempt is a process group of its own on this machine.

The attempt leads a new session (so a terminal's Ctrl-C or the daemon's own
signals never reach it, and the whole group can be signalled). Once its main
process exits, whatever it left running in its group is stopped too, as a CI job
does; the daemon becomes a child subreaper so it can tell when those are gone.

What a run leaves outside its group is found and stopped by processes.py.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from typing import Callable

from puppemon.run.backend import Launch, StartFailed
from puppemon.run.processes import (GIVE_UP, become_subreaper, group_alive, process_start_time, signal_group,
                                    stop_left_running)

CHUNK = 64 * 1024
# How long to keep reading a pipe whose writer escaped the process group (setsid)
# after everything in the group is gone.
DRAIN = 1.0


class LocalExecution:
    """One attempt running as the process group led by `pid`."""

    def __init__(self, proc: subprocess.Popen, output: Callable[[bytes], None], grace: float,
                 run_id: str = "") -> None:
        self.proc, self.pid, self.output, self.grace = proc, proc.pid, output, grace
        self.run_id = run_id
        self.escaped: int | None = None  # how many it left running outside its group, once swept
        self.start_time = process_start_time(proc.pid)
        self.sel = selectors.DefaultSelector()
        self.fd = proc.stdout.fileno()
        self.sel.register(self.fd, selectors.EVENT_READ, "out")
        try:
            self.pidfd = os.pidfd_open(proc.pid)  # wakes the select as soon as the child exits
            self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")
        except (AttributeError, OSError):  # not Linux >= 5.3: the select timeout polls instead
            self.pidfd = None
        self.pipe_open = True
        self.term_at: float | None = None
        self.killed_at: float | None = None
        self.gone_at: float | None = None
        self.done = False

    @property
    def running(self) -> bool:
        return self.proc.poll() is None

    def wait(self, timeout: float) -> int | None:
        now = time.monotonic()
        exited = self.proc.poll() is not None
        group = True if not exited else group_alive(self.pid)
        # Once the main process has exited, also stop whatever it left running
        # (as a CI job does), which may hold the pipe.
        if self.term_at is None and group and exited:
            self.stop()
        if self.term_at is not None and self.killed_at is None and group and now >= self.term_at + self.grace:
            self.kill()
        if exited and not group and self.gone_at is None:
            self.gone_at = now
            self._sweep()  # what escaped the group may hold the pipe: stop it now rather than drain
        if self.gone_at is not None and (not self.pipe_open or now >= self.gone_at + DRAIN):
            return self._finished()
        if exited and self.killed_at is not None and now >= self.killed_at + GIVE_UP:
            return self._finished()  # unreapable members (not our orphans); give up waiting for them
        for key, _ in self.sel.select(timeout):
            if key.data == "out":
                data = os.read(self.fd, CHUNK)
                if data:
                    self.output(data)
                else:
                    self.sel.unregister(self.fd)
                    self.pipe_open = False
            else:
                self.sel.unregister(self.pidfd)
                os.close(self.pidfd)
                self.pidfd = None
        return None

    def _finished(self) -> int:
        self._sweep()
        self.done = True
        return self.proc.returncode

    def _sweep(self) -> None:
        if self.escaped is None:
            self.escaped = stop_left_running(self.run_id) if self.run_id else 0

    def stop(self) -> None:
        if self.term_at is None:
            self.term_at = time.monotonic()
            signal_group(self.pid, signal.SIGTERM)
            signal_group(self.pid, signal.SIGCONT)  # a paused group must wake to see the SIGTERM

    def kill(self) -> None:
        if self.killed_at is None:
            self.killed_at = time.monotonic()
        signal_group(self.pid, signal.SIGKILL)

    def pause(self) -> None:
        signal_group(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        signal_group(self.pid, signal.SIGCONT)

    def handle(self) -> dict:
        return {"pid": self.pid, "pid_start": self.start_time, "run_id": self.run_id}

    def close(self) -> None:
        if not self.done:  # an exception (e.g. from the output callback): never leave the flow running
            signal_group(self.pid, signal.SIGKILL)
            self.proc.wait()
            give_up = time.monotonic() + GIVE_UP
            while group_alive(self.pid) and time.monotonic() < give_up:
                time.sleep(0.01)
            self._sweep()
        self.sel.close()
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.proc.stdout.close()


class LocalBackend:
    """Runs each attempt as a process group on the daemon's machine."""

    name = "local"

    def start(self, launch: Launch, output: Callable[[bytes], None]) -> LocalExecution:
        become_subreaper()
        argv, cwd = launch.argv, launch.cwd
        who = {}
        if launch.user is not None:  # the daemon is root: drop to the user, groups first
            who = {"user": launch.user.uid, "group": launch.user.gid, "extra_groups": list(launch.user.groups)}
        try:
            proc = subprocess.Popen(argv, cwd=cwd, env=launch.env, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    start_new_session=True, close_fds=True, **who)
        except FileNotFoundError:
            if "/" in argv[0] and os.path.isfile(os.path.join(cwd, argv[0])):
                raise StartFailed(127, f"cannot execute {argv[0]}: its interpreter (#! line) was not found") from None
            raise StartFailed(127, f"command not found: {argv[0]}") from None
        except PermissionError:
            raise StartFailed(126, f"permission denied: cannot execute {argv[0]}") from None
        except OSError as exc:
            raise StartFailed(126, f"cannot execute {argv[0]}: {exc.strerror or exc}") from None
        return LocalExecution(proc, output, launch.grace, launch.run_id)

    def recover(self, handle: dict) -> str | None:
        """Kill the process group of a crashed run if it is still alive and really ours, and what
        it left running outside the group (which went to PID 1 when the daemon died)."""
        killed = []
        if _recover_group(handle):
            killed.append(f"its leftover processes (group {handle['pid']})")
        escaped = stop_left_running(handle["run_id"], True, handle.get("pid")) if handle.get("run_id") else 0
        if escaped:
            killed.append(f"{escaped} {'process' if escaped == 1 else 'processes'} it left running "
                          f"outside its group")
        return " and ".join(killed) + " were killed" if killed else None


def _recover_group(handle: dict) -> bool:
    pid = handle.get("pid")
    if not pid or handle.get("pid_start") is None or process_start_time(pid) != handle["pid_start"]:
        return False
    try:
        os.killpg(pid, signal.SIGKILL)  # the run leads its own process group
    except (ProcessLookupError, PermissionError):
        return False
    return True
