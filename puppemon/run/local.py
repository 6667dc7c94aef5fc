"""The `local` backend: each attempt is a process group of its own on this machine.

The attempt leads a new session (so a terminal's Ctrl-C or the daemon's own
signals never reach it, and the whole group can be signalled). Once its main
process exits, whatever it left running in its group is stopped too, as a CI job
does; the daemon becomes a child subreaper so it can tell when those are gone.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from typing import Callable

from puppemon.run.backend import Launch, StartFailed

CHUNK = 64 * 1024
# How long to keep reading a pipe whose writer escaped the process group (setsid)
# after everything in the group is gone.
DRAIN = 1.0
# How long to wait for members that SIGKILL did not take away (not our orphans).
GIVE_UP = 2.0

_subreaper_lock = threading.Lock()
_subreaper_done = False


def become_subreaper() -> None:
    """Adopt the orphans of our runs (Linux), so we can reap them and tell that a
    process group is really gone even where PID 1 does not reap (containers)."""
    global _subreaper_done
    with _subreaper_lock:
        if _subreaper_done or not sys.platform.startswith("linux"):
            return
        _subreaper_done = True
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
        except (OSError, AttributeError):
            pass


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid from ours."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return stat.rsplit(")", 1)[1].split()[19]


def group_alive(pgid: int) -> bool:
    """Whether any process of group `pgid` is left; reaps the adopted ones that exited.
    Call only after the group leader itself has been reaped."""
    try:
        while os.waitpid(-pgid, os.WNOHANG)[0]:
            pass
    except ChildProcessError:
        pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


class LocalExecution:
    """One attempt running as the process group led by `pid`."""

    def __init__(self, proc: subprocess.Popen, output: Callable[[bytes], None], grace: float) -> None:
        self.proc, self.pid, self.output, self.grace = proc, proc.pid, output, grace
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
        self.done = True
        return self.proc.returncode

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
        return {"pid": self.pid, "pid_start": self.start_time}

    def close(self) -> None:
        if not self.done:  # an exception (e.g. from the output callback): never leave the flow running
            signal_group(self.pid, signal.SIGKILL)
            self.proc.wait()
            give_up = time.monotonic() + GIVE_UP
            while group_alive(self.pid) and time.monotonic() < give_up:
                time.sleep(0.01)
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
        return LocalExecution(proc, output, launch.grace)

    def recover(self, handle: dict) -> str | None:
        """Kill the process group of a crashed run if it is still alive and really ours."""
        pid = handle.get("pid")
        if not pid or handle.get("pid_start") is None or process_start_time(pid) != handle["pid_start"]:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)  # the run leads its own process group
        except (ProcessLookupError, PermissionError):
            return None
        return f"its leftover processes (group {pid}) were killed"
