"""One run of a flow: its workspace, environment, attempts with timeout and retries, a capped
and redacted log, its result and the files it leaves in its output directory.

Where each attempt executes is a backend (backend.py); the runner is the same for
all of them. `execute` does not raise for a run that goes wrong (a missing code
directory, a command that does not exist, a crash): it returns a failed RunResult
with `error` set. Only a caller's bug raises (a flow with neither entrypoint nor
command, an unknown workdir mode, an exception from a callback, after which the
flow is killed). It is safe to call from several threads at once.
"""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from puppemon import env_name
from puppemon.formats import format_duration, plural, utc_iso
from puppemon.project.manifest import Flow
from puppemon.run import backends
from puppemon.run.backend import Backend, Execution, Launch, StartFailed
from puppemon.run.capture import Log
from puppemon.run.spec import Attempt, Output, PauseSwitch, RunResult, RunSpec
from puppemon.run.users import blocked, hand_over
from puppemon.run.workspace import collect_outputs, copy_code, empty_dir, new_area, read_left, rmtree
from puppemon.secrets import redact, redact_json, secret_text

POLL = 0.05
RESULT_LIMIT = 5 * 1024**2   # result.json is JSON for the record, not a data store

OnStart = Callable[[int, Execution], None]   # (attempt number, the started attempt)


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _argv(flow: Flow, result_file: Path, python: str = sys.executable) -> list[str]:
    if flow.entrypoint:
        return [python, "-m", "puppemon.run.bootstrap", flow.entrypoint, str(result_file)]
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
        env[env_name(name)] = secret_text(value)
    env.update({
        "PUPPEMON_RUN_ID": spec.run_id,
        "PUPPEMON_FLOW": spec.flow.name,
        "PUPPEMON_PARAMS": json.dumps(params),
        "PUPPEMON_OUTPUT_DIR": str(outputs),
        "PUPPEMON_FLOWS_COMMIT": spec.flows_commit,
        "TMPDIR": str(tmp),
    })
    env.update(trigger_env(spec.trigger, spec.scheduled, spec.trigger_data))
    if spec.environment is not None:  # its interpreter and console scripts first; the flow API importable
        env["VIRTUAL_ENV"] = str(spec.environment.path)
        env["PATH"] = os.pathsep.join([str(spec.environment.path / "bin"), *filter(None, [env.get("PATH")])])
        # the flow API, and what the flow's own `env:` adds; never the daemon's PYTHONPATH
        env["PYTHONPATH"] = os.pathsep.join([str(spec.flow_api), *filter(None, [spec.flow.env.get("PYTHONPATH")])])
    return env


def trigger_env(trigger: dict, scheduled: datetime | None, extra: dict | None = None) -> dict[str, str]:
    """What started a run, for its environment (DESIGN.md "Trigger data"): PUPPEMON_TRIGGER is the JSON
    that `puppemon.trigger()` returns; a kind's own values also get a variable of their own. `extra`:
    what the trigger gives the run that its record does not keep (an upstream run's result)."""
    data = {**trigger, "scheduled_time": utc_iso(scheduled)}
    env = {"PUPPEMON_TRIGGER": json.dumps(data, default=str)}
    if scheduled is not None:
        env["PUPPEMON_SCHEDULED_TIME"] = utc_iso(scheduled)
    if "files" in trigger:   # on_file: the absolute paths of the files the run is for
        env["PUPPEMON_TRIGGER_FILES"] = json.dumps(trigger["files"])
    upstream = trigger.get("upstream")
    if isinstance(upstream, dict):   # after: the run that ended (daemon/chains.py)
        env.update({f"PUPPEMON_UPSTREAM_{key.upper()}": str(upstream.get(name) or "")
                    for key, name in (("run", "id"), ("flow", "flow"), ("status", "status"))})
        if (extra or {}).get("upstream_result") is not None:
            env["PUPPEMON_UPSTREAM_RESULT"] = extra["upstream_result"]
    return env


def attempt(backend: Backend, launch: Launch, timeout: float | None, cancel: threading.Event | None,
            log: Log, on_start: OnStart | None,
            pause: PauseSwitch | None = None) -> tuple[str, int | None, str | None, int]:
    """Run one attempt to its end; returns (status, exit_code, error, how many processes it left
    running outside its process group, which the backend stopped). While `pause` holds it frozen,
    its timeout does not count."""
    try:
        execution = backend.start(launch, log.write)
    except StartFailed as exc:
        return "failed", exc.exit_code, exc.error, 0
    deadline = time.monotonic() + timeout if timeout else None
    reason = None  # "timed_out" | "cancelled" | "paused_too_long" once we started stopping it
    try:
        if on_start is not None:
            on_start(launch.attempt, execution)
        while True:
            if reason is None and execution.running:
                if pause is not None:
                    deadline = _apply_pause(pause, execution, deadline, log)
                if cancel is not None and cancel.is_set():
                    reason = "cancelled"
                elif pause is not None and pause.since is not None and pause.limit is not None \
                        and time.monotonic() - pause.since >= pause.limit:
                    reason = "paused_too_long"
                elif deadline is not None and time.monotonic() >= deadline and not (pause and pause.since):
                    reason = "timed_out"
                if reason:
                    execution.stop()  # a frozen group is woken to see it (the backend's stop)
            rc = execution.wait(POLL)
            if rc is not None:
                break
    finally:
        if pause is not None:
            pause.since = None
        execution.close()
        escaped = _note_escaped(execution, log)
    status, code, error = _outcome(reason, rc, timeout, cancel, pause)
    if reason is None and getattr(execution, "outcome", None):   # the backend's own verdict (a cluster's limit)
        status, code, error = execution.outcome
    elif status == "failed" and getattr(execution, "reason", None):   # the backend knows better (out of memory)
        error = execution.reason
    return status, code, error, escaped


def _apply_pause(pause: PauseSwitch, execution: Execution, deadline: float | None, log: Log) -> float | None:
    """Freeze or continue the attempt as `pause` asks; the deadline, moved by the time it was frozen."""
    if pause.wanted and pause.since is None:
        execution.pause()
        pause.since = time.monotonic()
        log.line("puppemon: paused (its timeout does not count while paused)")
    elif not pause.wanted and pause.since is not None:
        execution.resume()
        frozen = time.monotonic() - pause.since
        pause.since = None
        log.line(f"puppemon: resumed after {format_duration(frozen)} paused")
        if deadline is not None:
            deadline += frozen
    return deadline


def _outcome(reason: str | None, rc: int, timeout: float | None, cancel: threading.Event | None,
             pause: PauseSwitch | None = None) -> tuple[str, int | None, str | None]:
    if reason is None and rc is not None and rc < 0 and cancel is not None and cancel.is_set():
        reason = "cancelled"  # killed from outside while a cancel was pending (a forced daemon stop)
    if reason == "timed_out":
        return reason, 124, f"timed out after {format_duration(timeout)}"
    if reason == "cancelled":
        return reason, 130, "cancelled"
    if reason == "paused_too_long":
        return "cancelled", 130, f"cancelled: paused for longer than {format_duration(pause.limit)} (max_pause)"
    if rc == 0:
        return "succeeded", 0, None
    if rc < 0:
        return "failed", 128 - rc, f"killed by {_signal_name(-rc)}"
    if rc == 127:
        return "failed", rc, "exited with code 127 (command not found)"
    return "failed", rc, f"exited with code {rc}"


def _note_escaped(execution: Execution, log: Log) -> int:
    """How many processes the attempt left running outside its group (stopped by the backend), logged."""
    escaped = execution.escaped or 0
    if escaped:
        log.line(f"puppemon: stopped {plural(escaped, 'process', 'processes')} this run left running "
                 f"outside its process group (setsid, a double fork)")
    return escaped


def execute(spec: RunSpec, *, on_output: Callable[[bytes], None] | None = None,
            cancel: threading.Event | None = None, on_start: OnStart | None = None,
            pause: PauseSwitch | None = None) -> RunResult:
    """Run `spec` to its end (with its retries) and return what happened."""
    flow = spec.flow
    started, t0 = _now(), time.monotonic()
    # Through JSON, so the function gets exactly what PUPPEMON_PARAMS and the record say.
    params = json.loads(json.dumps({**flow.params, **spec.params}, default=str))
    _argv(flow, Path())  # a flow with neither entrypoint nor command is a caller's bug: raise
    backend = backends.get(spec.backend) if isinstance(spec.backend, str) else spec.backend
    log = Log(spec.log_limit, on_output)
    run = _Run(status="failed")
    area = None
    try:
        area = new_area(spec.run_id, getattr(backend, "area_root", None))
        _attempts(spec, backend, area, params, log, run, cancel, on_start, pause)
    except _StartError as exc:
        run.error = str(exc)
    except OSError as exc:
        run.error = f"could not prepare the run: {exc}"
    finally:
        if area is not None:
            rmtree(area)
    return _result(spec, run, log, params, started, time.monotonic() - t0)


def _result(spec: RunSpec, run: _Run, log: Log, params: dict, started: datetime, duration: float) -> RunResult:
    secrets = spec.secrets
    return RunResult(
        run_id=spec.run_id, flow=spec.flow.name, status=run.status, exit_code=run.exit_code,
        attempts=run.attempts, started=started, finished=_now(), duration=duration,
        log=log.render(secrets), result=redact_json(run.result, secrets),
        has_result=run.result is not None, outputs=run.outputs,
        outputs_note=redact(run.outputs_note, secrets) if run.outputs_note else None,
        error=redact(run.error, secrets) if run.error else None, params=params, escaped=run.escaped,
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
    escaped: int = 0


class _StartError(Exception):
    """The run could not start (its code directory is missing, ...)."""


def _workdir(spec: RunSpec, area: Path) -> Path:
    code_dir = Path(spec.code_dir)
    if not code_dir.is_dir():
        raise _StartError(f"code directory {code_dir} does not exist")
    mode = spec.workdir or spec.flow.workdir or "fresh"
    if mode == "shared":
        return code_dir
    if mode == "fresh":
        copy_code(code_dir, area / "work")  # the deploy checkout is read-only; this copy is the run's own
        return area / "work"
    raise ValueError(f"unknown workdir mode {mode!r}")


def _hand_over(spec: RunSpec, area: Path, env: dict[str, str]) -> None:
    """Give the run's area (its copy of the code, TMPDIR, outputs) to the OS user it runs as."""
    user = spec.user
    if (spec.workdir or spec.flow.workdir) == "shared":
        raise _StartError(f"flow {spec.flow.name!r} runs as user {user.name!r}, so it cannot use workdir: shared")
    if spec.environment is not None and (stop := blocked(user, spec.environment.interpreter, True)):
        raise _StartError(f"user {user.name!r} cannot run the flow's environment ({stop} is closed to it): "
                          "environments live in the daemon's state directory, for the daemon's user only; "
                          "give this flow `python: system`, or no user")
    if spec.flow.entrypoint and spec.environment is None:
        import puppemon

        for path, execute in ((sys.executable, True), (os.path.dirname(puppemon.__file__), False)):
            stop = blocked(user, path, execute)
            if stop:
                raise _StartError(f"user {user.name!r} cannot {'run' if execute else 'read'} {path} ({stop} is "
                                  "closed to it): install puppemon where that user can read it, e.g. a "
                                  "virtual environment under /opt, or use a command flow")
    hand_over(area, user)
    env.update(user.env())


def _attempts(spec: RunSpec, backend: Backend, area: Path, params: dict, log: Log, run: _Run,
              cancel: threading.Event | None, on_start: OnStart | None, pause: PauseSwitch | None = None) -> None:
    flow = spec.flow
    tmp, out_dir, result_file = area / "tmp", area / "outputs", area / "result.json"
    error_file = Path(f"{result_file}.error")
    tmp.mkdir()
    out_dir.mkdir()
    cwd = _workdir(spec, area)
    argv = _argv(flow, result_file, str(spec.environment.interpreter) if spec.environment else sys.executable)
    env = _env(spec, params, out_dir, tmp)
    if spec.user is not None:
        _hand_over(spec, area, env)
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
            empty_dir(out_dir)
            if spec.user is not None:  # a new, empty directory: only itself to hand over
                os.lchown(out_dir, spec.user.uid, spec.user.gid)
            result_file.unlink(missing_ok=True)
            error_file.unlink(missing_ok=True)
        a_started, a_t0 = _now(), time.monotonic()
        launch = Launch(spec.run_id, number, argv, cwd, env, flow, spec.grace, spec.user)
        run.status, run.exit_code, run.error, escaped = attempt(backend, launch, flow.timeout, cancel, log,
                                                                on_start, pause)
        run.escaped += escaped
        run.attempts.append(Attempt(number, run.status, run.exit_code, a_started, _now(),
                                    time.monotonic() - a_t0))
        if run.status in ("succeeded", "cancelled"):
            break
    _collect(spec, area, run, log)


def _collect(spec: RunSpec, area: Path, run: _Run, log: Log) -> None:
    """What the last attempt left: the error or result its function wrote, and the outputs."""
    out_dir, result_file = area / "outputs", area / "result.json"
    error_file = Path(f"{result_file}.error")
    try:
        if run.status == "failed" and (error := read_left(error_file, 64 * 1024)) is not None:
            run.error = error.decode("utf-8", "replace").strip() or run.error
        if run.status == "succeeded" and (result := read_left(result_file, RESULT_LIMIT)) is not None:
            run.result = json.loads(result)
    except (OSError, ValueError) as exc:
        log.line(f"puppemon: could not read the result: {exc}")
    try:
        run.outputs, run.outputs_note = collect_outputs(out_dir, spec.outputs_limit, spec.secrets)
    except OSError as exc:
        run.outputs_note = f"outputs could not be collected: {exc}"


class _Adopted:
    """A backend whose one start is an attempt already running (re-attached after a daemon restart)."""

    def __init__(self, execution: Execution) -> None:
        self.execution = execution

    def start(self, launch: Launch, output: Callable[[bytes], None]) -> Execution:
        self.execution.output = output
        return self.execution


def resume(spec: RunSpec, execution: Execution, started: datetime, *,
           on_output: Callable[[bytes], None] | None = None, cancel: threading.Event | None = None,
           on_start: OnStart | None = None, pause: PauseSwitch | None = None) -> RunResult:
    """Follow to its end an attempt of a run that a previous daemon started (`execution`, from the backend's
    `reattach`: its `area` and `attempt` say which): its timeout counts from the attempt's own start (the
    execution's `started`, a time.time(), else the run's `started`); it is the run's last."""
    params = json.loads(json.dumps({**spec.flow.params, **spec.params}, default=str))
    log = Log(spec.log_limit, on_output)
    area, number = Path(execution.area), execution.attempt
    log.line(f"puppemon: attempt {number} went on while the daemon restarted; followed again")
    run = _Run(status="failed")
    submitted = getattr(execution, "started", None)
    begun = datetime.fromtimestamp(submitted, timezone.utc) if submitted else started
    timeout = max(0.01, spec.flow.timeout - (_now() - begun).total_seconds()) if spec.flow.timeout else None
    launch = Launch(spec.run_id, number, [], area / "work", {}, spec.flow, spec.grace)
    try:
        run.status, run.exit_code, run.error, run.escaped = attempt(_Adopted(execution), launch, timeout, cancel,
                                                                    log, on_start, pause)
        run.attempts.append(Attempt(number, run.status, run.exit_code, begun, _now(), (_now() - begun).total_seconds()))
        _collect(spec, area, run, log)
    finally:
        rmtree(area)
    return _result(spec, run, log, params, started, (_now() - started).total_seconds())
