"""One run of a flow: a child process in its own session, with timeout, retries, a
capped log, redaction and the files it leaves in its output directory.

`execute` does not raise for a run that goes wrong (a missing code directory, a
command that does not exist, a crash): it returns a failed RunResult with `error`
set. Only a caller's bug raises (a flow with neither entrypoint nor command, an
unknown workdir mode, an exception from a callback, after which the flow is
killed). It is safe to call from several threads at once.
"""
from __future__ import annotations

import hashlib
import json
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from puppemon import env_name
from puppemon.capture import _Log, _redact_json, _secret_text, redact  # noqa: F401 - redact is public here too
from puppemon.manifest import Flow, format_duration

CHUNK = 64 * 1024
# How long to keep reading a pipe whose writer escaped the process group (setsid)
# after everything in the group is gone.
DRAIN = 1.0
_POLL = 0.05


def new_run_id(now: datetime | None = None) -> str:
    """A run id: UTC start time and 6 random hex digits, e.g. `20261125T083000Z-7f3a9c`."""
    now = now or datetime.now(timezone.utc)
    if now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + os.urandom(3).hex()


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
    workdir: str | None = None
    log_limit: int = 5 * 1024**2
    outputs_limit: int = 20 * 1024**2
    grace: float = 10.0
    base_env: dict | None = None


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


# --- processes -------------------------------------------------------------

_subreaper_lock = threading.Lock()
_subreaper_done = False


def _become_subreaper() -> None:
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


def _group_alive(pgid: int) -> bool:
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


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _run_attempt(argv, cwd, env, timeout, grace, cancel, log, on_spawn, number):
    """Run one attempt; returns (status, exit_code, error)."""
    try:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    except FileNotFoundError:
        if "/" in argv[0] and os.path.isfile(os.path.join(cwd, argv[0])):
            return "failed", 127, f"cannot execute {argv[0]}: its interpreter (#! line) was not found"
        return "failed", 127, f"command not found: {argv[0]}"
    except PermissionError:
        return "failed", 126, f"permission denied: cannot execute {argv[0]}"
    except OSError as exc:
        return "failed", 126, f"cannot execute {argv[0]}: {exc.strerror or exc}"
    pgid = proc.pid
    sel = selectors.DefaultSelector()
    fd = proc.stdout.fileno()
    sel.register(fd, selectors.EVENT_READ, "out")
    try:
        pidfd = os.pidfd_open(proc.pid)  # wakes the select as soon as the child exits
        sel.register(pidfd, selectors.EVENT_READ, "exit")
    except (AttributeError, OSError):  # not Linux >= 5.3: the select timeout polls instead
        pidfd = None
    deadline = time.monotonic() + timeout if timeout else None
    reason = None  # "timed_out" | "cancelled" once we started stopping it
    term_at = killed_at = gone_at = None
    finished = False
    try:
        if on_spawn is not None:
            on_spawn(number, proc.pid)
        pipe_open = True
        while True:
            now = time.monotonic()
            exited = proc.poll() is not None
            if not exited and reason is None:
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                elif deadline is not None and now >= deadline:
                    reason = "timed_out"
            group = True if not exited else _group_alive(pgid)
            # Stop the group on timeout/cancel, and once the main process has exited
            # also whatever it left running (as a CI job does), which may hold the pipe.
            if term_at is None and group and (reason or exited):
                term_at = now
                _signal_group(pgid, signal.SIGTERM)
            if term_at is not None and killed_at is None and group and now >= term_at + grace:
                killed_at = now
                _signal_group(pgid, signal.SIGKILL)
            if exited and not group and gone_at is None:
                gone_at = now
            if gone_at is not None and (not pipe_open or now >= gone_at + DRAIN):
                break
            if exited and killed_at is not None and now >= killed_at + 2.0:
                break  # unreapable members (not our orphans); give up waiting for them
            for key, _ in sel.select(_POLL):
                if key.data == "out":
                    data = os.read(fd, CHUNK)
                    if data:
                        log.write(data)
                    else:
                        sel.unregister(fd)
                        pipe_open = False
                else:
                    sel.unregister(pidfd)
                    os.close(pidfd)
                    pidfd = None
        finished = True
    finally:
        if not finished:  # an exception (e.g. from on_output): never leave the flow running
            _signal_group(pgid, signal.SIGKILL)
            proc.wait()
            give_up = time.monotonic() + 2.0
            while _group_alive(pgid) and time.monotonic() < give_up:
                time.sleep(0.01)
        sel.close()
        if pidfd is not None:
            os.close(pidfd)
        proc.stdout.close()
    rc = proc.returncode
    if reason is None and rc != 0 and cancel is not None and cancel.is_set():
        reason = "cancelled"  # killed from outside while a cancel was pending (a forced daemon stop)
    if reason == "timed_out":
        return reason, 124, f"timed out after {format_duration(timeout)}"
    if reason == "cancelled":
        return reason, 130, "cancelled"
    if rc == 0:
        return "succeeded", 0, None
    if rc < 0:
        return "failed", 128 - rc, f"killed by {_signal_name(-rc)}"
    if rc == 127:
        return "failed", rc, "exited with code 127 (command not found)"
    return "failed", rc, f"exited with code {rc}"


# --- files -----------------------------------------------------------------

def _rmtree(path: Path) -> None:
    """Remove a tree the flow may have made read-only in places."""
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            p = os.path.join(root, d)
            if not os.path.islink(p):
                try:
                    os.chmod(p, 0o700)
                except OSError:
                    pass
    shutil.rmtree(path, ignore_errors=True)


def _user_writable(root: Path) -> None:
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files, None]:
            path = os.path.join(directory, name) if name else directory
            if not os.path.islink(path):
                mode = os.lstat(path).st_mode
                if not mode & stat.S_IWUSR:
                    os.chmod(path, stat.S_IMODE(mode) | stat.S_IWUSR)


def _empty_dir(path: Path) -> None:
    _rmtree(path)
    path.mkdir()


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= factor:
            return f"{n / factor:.1f}".removesuffix(".0") + " " + unit
    return f"{n} bytes"


def _collect_outputs(root: Path, limit: int) -> tuple[list[Output], str | None]:
    found: list[tuple[str, int, bool]] = []
    skipped: list[str] = []

    def walk(directory: Path, prefix: str) -> None:
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            rel = prefix + entry.name
            if entry.is_symlink():
                skipped.append(f"{rel} (symlink to {os.readlink(entry.path)})")
            elif entry.is_dir(follow_symlinks=False):
                walk(Path(entry.path), rel + "/")
            elif entry.is_file(follow_symlinks=False):
                st = entry.stat(follow_symlinks=False)
                found.append((rel, st.st_size, bool(st.st_mode & stat.S_IXUSR)))
            else:
                skipped.append(f"{rel} (not a regular file)")

    walk(root, "")
    found.sort()
    outputs: list[Output] = []
    total = 0
    left_out = left_bytes = 0
    for rel, size, executable in found:
        if left_out or total + size > limit:
            left_out += 1
            left_bytes += size
            continue
        fd = os.open(root / rel, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as fh:
            data = fh.read(limit - total + 1)
        if len(data) > limit - total:  # grew after the stat
            left_out += 1
            left_bytes += len(data)
            continue
        total += len(data)
        outputs.append(Output(rel, len(data), hashlib.sha256(data).hexdigest(), data, executable))
    notes = []
    if left_out:
        notes.append(f"{left_out} file{'s' * (left_out != 1)} ({_size(left_bytes)}) not recorded: "
                     f"outputs are capped at {_size(limit)} per run")
    if skipped:
        more = f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""
        notes.append("skipped " + ", ".join(skipped[:10]) + more)
    return outputs, "; ".join(notes) or None


# --- the run ---------------------------------------------------------------

def _argv(flow: Flow, result_file: Path) -> list[str]:
    if flow.entrypoint:
        return [sys.executable, "-m", "puppemon._bootstrap", flow.entrypoint, str(result_file)]
    if isinstance(flow.command, str):
        return ["/bin/sh", "-c", flow.command]
    if flow.command:
        return [str(a) for a in flow.command]
    raise ValueError(f"flow {flow.name!r} has neither entrypoint nor command")


def _env(spec: RunSpec, params: dict, outputs: Path, tmp: Path) -> dict[str, str]:
    base = os.environ if spec.base_env is None else spec.base_env
    # Nothing of puppemon's own (tokens, webhook secrets, settings) leaks into a flow.
    env = {k: v for k, v in base.items() if not k.startswith("PUPPEMON_")}
    env.update(spec.variables)
    env.update(spec.flow.env)
    for name, value in spec.secrets.items():
        env[env_name(name)] = _secret_text(value)
    env.update({
        "PUPPEMON_RUN_ID": spec.run_id,
        "PUPPEMON_FLOW": spec.flow.name,
        "PUPPEMON_PARAMS": json.dumps(params),
        "PUPPEMON_OUTPUT_DIR": str(outputs),
        "PUPPEMON_FLOWS_COMMIT": spec.flows_commit,
        "TMPDIR": str(tmp),
    })
    return env


def _now() -> datetime:
    return datetime.now(timezone.utc)


def execute(spec: RunSpec, *, on_output: Callable[[bytes], None] | None = None,
            cancel: threading.Event | None = None,
            on_spawn: Callable[[int, int], None] | None = None) -> RunResult:
    """Run `spec` to its end (with its retries) and return what happened."""
    flow = spec.flow
    started, t0 = _now(), time.monotonic()
    # Through JSON, so the function gets exactly what PUPPEMON_PARAMS and the record say.
    params = json.loads(json.dumps({**flow.params, **spec.params}, default=str))
    _argv(flow, Path())  # a flow with neither entrypoint nor command is a caller's bug: raise
    log = _Log(spec.log_limit, on_output)
    run = _Run(status="failed")
    area = None
    try:
        area = Path(tempfile.mkdtemp(prefix=f"puppemon-{spec.run_id}-"))
        _attempts(spec, area, params, log, run, cancel, on_spawn)
    except _StartError as exc:
        run.error = str(exc)
    except OSError as exc:
        run.error = f"could not prepare the run: {exc}"
    finally:
        if area is not None:
            _rmtree(area)
    secrets = spec.secrets
    return RunResult(
        run_id=spec.run_id, flow=flow.name, status=run.status, exit_code=run.exit_code,
        attempts=run.attempts, started=started, finished=_now(), duration=time.monotonic() - t0,
        log=log.render(secrets), result=_redact_json(run.result, secrets),
        has_result=run.result is not None, outputs=run.outputs,
        outputs_note=redact(run.outputs_note, secrets) if run.outputs_note else None,
        error=redact(run.error, secrets) if run.error else None, params=params,
    )


@dataclass
class _Run:
    status: str
    exit_code: int | None = None
    error: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    result: Any = None
    outputs: list[Output] = field(default_factory=list)
    outputs_note: str | None = None


class _StartError(Exception):
    """The run could not start (its code directory is missing, ...)."""


def _attempts(spec: RunSpec, area: Path, params: dict, log: _Log, run: _Run,
              cancel: threading.Event | None, on_spawn) -> None:
    flow = spec.flow
    tmp, out_dir, result_file = area / "tmp", area / "outputs", area / "result.json"
    error_file = Path(f"{result_file}.error")
    tmp.mkdir()
    out_dir.mkdir()
    code_dir = Path(spec.code_dir)
    if not code_dir.is_dir():
        raise _StartError(f"code directory {code_dir} does not exist")
    mode = spec.workdir or flow.workdir or "fresh"
    if mode == "shared":
        cwd = code_dir
    elif mode == "fresh":
        cwd = area / "work"
        shutil.copytree(code_dir, cwd, symlinks=True)
        _user_writable(cwd)  # the daemon's deploy checkout is read-only; this run's copy is its own
    else:
        raise ValueError(f"unknown workdir mode {mode!r}")
    argv = _argv(flow, result_file)
    env = _env(spec, params, out_dir, tmp)
    _become_subreaper()
    total = flow.retries + 1
    waiter = cancel or threading.Event()
    for number in range(1, total + 1):
        if number == 1 and cancel is not None and cancel.is_set():
            run.status, run.exit_code, run.error = "cancelled", 130, "cancelled before it started"
            break
        if number > 1:
            if waiter.wait(flow.retry_delay):
                run.status, run.exit_code = "cancelled", 130
                run.error = f"cancelled while waiting for attempt {number} of {total}"
                break
            log.line(f"--- attempt {number} of {total} (after {flow.retry_delay:.1f}s delay) ---")
            _empty_dir(out_dir)
            result_file.unlink(missing_ok=True)
            error_file.unlink(missing_ok=True)
        a_started, a_t0 = _now(), time.monotonic()
        run.status, run.exit_code, run.error = _run_attempt(
            argv, cwd, env, flow.timeout, spec.grace, cancel, log, on_spawn, number)
        run.attempts.append(Attempt(number, run.status, run.exit_code, a_started, _now(),
                                    time.monotonic() - a_t0))
        if run.status in ("succeeded", "cancelled"):
            break
    try:
        if run.status == "failed" and error_file.is_file():
            run.error = error_file.read_text(encoding="utf-8", errors="replace").strip() or run.error
        if run.status == "succeeded" and result_file.is_file():
            run.result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.line(f"puppemon: could not read the result: {exc}")
    try:
        run.outputs, run.outputs_note = _collect_outputs(out_dir, spec.outputs_limit)
    except OSError as exc:
        run.outputs_note = f"outputs could not be collected: {exc}"
