"""This machine's processes as the local backend sees them: the daemon as subreaper and not dumpable,
process start times and groups, and what a run left running outside its process group.

A process that leaves the group (`setsid`, a double fork) is adopted by the
daemon when its parent exits, as the subreaper. When an attempt's group is gone,
every process below the daemon that still carries the run's `PUPPEMON_RUN_ID`
in its environment is killed with its process group and reaped, and counted
(`escaped`). Another user's environment, which root without CAP_SYS_PTRACE (in a
container) may not open, is read by `grep` running as that user. What cannot be
told apart is a process that changed its environment: only a container or a
cgroup holds those.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

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


def _libc_prctl():
    """libc's prctl (Linux), or None; looked up before any fork, so a child only calls it."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _prctl(option: int, value: int) -> bool:
    prctl = _libc_prctl()
    return prctl is not None and prctl(option, value, 0, 0, 0) == 0


def dies_with_parent():
    """A Popen preexec_fn: the child is killed when this process dies, kill -9 included (Linux), so no
    helper of a dead daemon (uv building an environment) goes on writing; None where that is not possible."""
    prctl = _libc_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def arm() -> None:
        prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # died before that: nobody would send it
            os.kill(os.getpid(), signal.SIGKILL)
    return arm


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


def reap_adopted(names: tuple[str, ...]) -> int:
    """Reap the exited children called one of `names` that this process adopted as the subreaper and no one
    waits for (a container engine's monitor, which detaches from the client that started it); how many.
    Only by name: a child some Popen owns is never taken from it."""
    reaped = 0
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                stat = fh.read().decode("utf-8", "replace")
        except OSError:
            continue
        name, fields = stat.split("(", 1)[1].rsplit(")", 1)[0], stat.rsplit(")", 1)[1].split()
        if fields[0] == "Z" and int(fields[1]) == me and name in names:
            try:
                reaped += bool(os.waitpid(int(entry), os.WNOHANG)[0])
            except ChildProcessError:
                pass
    return reaped


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


def _carries(pid: int, mark: bytes, closed: list[int]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return mark in fh.read().split(b"\0")
    except PermissionError:  # another user's, and no CAP_SYS_PTRACE (root in a container): see _carried
        closed.append(pid)
        return False
    except OSError:  # gone
        return False


def _owner(pid: int) -> tuple[int, int] | None:
    """(real uid, real gid) of `pid`."""
    try:
        with open(f"/proc/{pid}/status", "rb") as fh:
            ids = {line.split(b":")[0]: int(line.split()[1]) for line in fh if line.startswith((b"Uid:", b"Gid:"))}
        return ids[b"Uid"], ids[b"Gid"]
    except (OSError, KeyError, ValueError, IndexError):
        return None


def _carried(pids: list[int], mark: bytes) -> list[int]:
    """Those of `pids` (other users' processes, whose environ root without CAP_SYS_PTRACE may not open)
    whose environment holds `mark`: read by grep running as their owner, who may open them."""
    if os.geteuid() != 0:
        return []
    by_owner: dict[tuple[int, int], list[int]] = {}
    for pid in pids:
        if (ids := _owner(pid)) is not None:
            by_owner.setdefault(ids, []).append(pid)
    found = []
    for (uid, gid), owned in by_owner.items():
        try:
            out = subprocess.run(["grep", "-lzxF", "-e", mark.decode(), *(f"/proc/{p}/environ" for p in owned)],
                                 user=uid, group=gid, extra_groups=[], stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=10, close_fds=True).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        found += [int(line.split("/")[2]) for line in out.decode().splitlines() if line.count("/") == 3]
    return found


def left_running(run_id: str, anywhere: bool = False, group: int | None = None) -> list[int]:
    """Live processes whose environment holds this run's PUPPEMON_RUN_ID: those below this process
    (orphans it adopted as the subreaper), or with `anywhere` every one it may read (after a crash,
    when they went to PID 1), never this process nor its parents, nor members of `group` (the run's own
    process group, which the caller kills)."""
    mark = f"{RUN_MARK}={run_id}".encode()
    table = _process_table()
    me = os.getpid()
    candidates = set(table) - _above(table, me) if anywhere else _below(table, me)
    candidates = {pid for pid in candidates if table[pid][2] != group}  # the run's own group, being killed
    closed: list[int] = []
    found = [pid for pid in candidates if table[pid][0] not in ("Z", "X") and _carries(pid, mark, closed)]
    return sorted(found + _carried(closed, mark))


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


def stop_left_running(run_id: str, anywhere: bool = False, group: int | None = None) -> int:
    """Kill what `run_id` left running outside its process group (see `left_running`), each with its
    process group, and reap those this process adopted; how many there were."""
    if not sys.platform.startswith("linux"):
        return 0
    own_group = os.getpgid(0)
    stopped: set[int] = set()
    deadline = time.monotonic() + GIVE_UP
    # Again until none is left: one may fork while the others are being killed.
    while (found := left_running(run_id, anywhere, group)) and time.monotonic() < deadline:
        for pid in found:
            _kill_with_group(pid, own_group)
        stopped.update(found)
        if anywhere:  # not our children (they went to PID 1): nothing to reap, only wait for them to go
            time.sleep(0.01)
        else:
            _reap(set(found), deadline)
    return len(stopped)
