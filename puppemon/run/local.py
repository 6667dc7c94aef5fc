"""The `local` backend: each attempt is a process group of its own on this machine.

The attempt leads a new session (so a terminal's Ctrl-C or the daemon's own
signals never reach it, and the whole group can be signalled). Once its main
process exits, whatever it left running in its group is stopped too, as a CI job
does; the daemon becomes a child subreaper so it can tell when those are gone.

A process that leaves the group (`setsid`, a double fork) is adopted by the
daemon when its parent exits, as the subreaper. When the attempt's group is gone,
every process below the daemon that still carries the run's `PUPPEMON_RUN_ID`
in its environment is killed with its process group and reaped, and counted
(`escaped`). What cannot be told apart is one that changed its environment (and
user, whose /proc/<pid>/environ we cannot read): only a container or a cgroup
holds those.
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
        _prctl(36, 1)  # PR_SET_CHILD_SUBREAPER


def become_undumpable() -> bool:
    """Make this process's /proc entries (environ, mem, ...) root's and refuse ptrace (Linux), so
    a run under the same OS user cannot read the secrets in its environment or memory. A child's
    exec makes the child dumpable again: runs of one user can still read each other's."""
    return sys.platform.startswith("linux") and _prctl(4, 0)  # PR_SET_DUMPABLE


def _prctl(option: int, value: int) -> bool:
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (state) on; None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return stat.rsplit(")", 1)[1].split()


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (clock ticks since boot), to tell a reused pid from ours."""
    fields = _stat_fields(pid)
    return fields[19] if fields else None


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


# -- processes a run left running outside its group ------------------------------------------

RUN_MARK = "PUPPEMON_RUN_ID"


def _process_table() -> dict[int, tuple[str, int, int]]:
    """pid -> (state, parent pid, process group) of every process this one can see."""
    table = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat_fields(int(entry))):
            table[int(entry)] = (fields[0], int(fields[1]), int(fields[2]))
    return table


def _below(table: dict[int, tuple[str, int, int]], root: int) -> set[int]:
    """The pids whose chain of parents leads to `root`."""
    children: dict[int, list[int]] = {}
    for pid, (_, ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _above(table: dict[int, tuple[str, int, int]], pid: int) -> set[int]:
    """`pid` and its chain of parents."""
    found = set()
    while pid in table and pid not in found:
        found.add(pid)
        pid = table[pid][1]
    return found


def _carries(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except OSError:  # gone, or not ours to read (another user's): cannot be told apart
        return False


def left_running(run_id: str, anywhere: bool = False) -> list[int]:
    """Live processes whose environment holds this run's PUPPEMON_RUN_ID: those below this process
    (orphans it adopted as the subreaper), or with `anywhere` every one it may read (after a crash,
    when they went to PID 1), never this process nor its parents."""
    mark = f"{RUN_MARK}={run_id}".encode()
    table = _process_table()
    me = os.getpid()
    candidates = set(table) - _above(table, me) if anywhere else _below(table, me)
    return sorted(pid for pid in candidates if table[pid][0] not in ("Z", "X") and _carries(pid, mark))


def _kill_with_group(pid: int, own_group: int) -> None:
    try:
        pgid = os.getpgid(pid)
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        return
    if pgid != own_group:  # an escaped process leads its own group (setsid): take what it started too
        signal_group(pgid, signal.SIGKILL)


def _reap(pids: set[int], deadline: float) -> None:
    """Wait for our killed orphans to exit and reap them (a grandchild becomes ours once its parent dies)."""
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            try:
                if os.waitpid(pid, os.WNOHANG)[0]:
                    pending.discard(pid)
            except ChildProcessError:
                if _stat_fields(pid) is None:  # gone, reaped by its own parent
                    pending.discard(pid)
        if pending:
            time.sleep(0.01)


def stop_left_running(run_id: str, anywhere: bool = False) -> int:
    """Kill what `run_id` left running outside its process group (see `left_running`), each with its
    process group, and reap those this process adopted; how many there were."""
    if not sys.platform.startswith("linux"):
        return 0
    own_group = os.getpgid(0)
    stopped: set[int] = set()
    deadline = time.monotonic() + GIVE_UP
    # Again until none is left: one may fork while the others are being killed.
    while (found := left_running(run_id, anywhere)) and time.monotonic() < deadline:
        for pid in found:
            _kill_with_group(pid, own_group)
        stopped.update(found)
        if anywhere:  # not our children (they went to PID 1): nothing to reap, only wait for them to go
            time.sleep(0.01)
        else:
            _reap(set(found), deadline)
    return len(stopped)


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
        escaped = stop_left_running(handle["run_id"], anywhere=True) if handle.get("run_id") else 0
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
