"""The `slurm` backend: each attempt is one Slurm batch job (`sbatch --parsable`, never `--wait`).

A run's area (its copy of the code, TMPDIR, outputs, result file) is made on the
server's `slurm_shared_dir`, which the daemon and the compute nodes both see; so
are its Python environment and the job's files, one set per attempt N:

    <area>/job-N.sh      the batch script: reads env-N, removes it, runs the flow, writes exit-N
    <area>/env-N         the run's environment as shell exports, readable by the daemon's user only
                         (secrets go through it, never the sbatch command line); gone once the job read it
    <area>/slurm-N.log   the job's output (sbatch --output), followed as the run's log
    <area>/exit-N        the flow's exit status, written by the job itself: the record never depends on
                         the controller remembering the job (MinJobAge, no slurmdbd)

The jobs' states come from one `squeue` per poll for all of them (slurmctl.Jobs).
Cancel is `scancel --signal=TERM --full`, then SIGKILL after the grace; pause is
`scontrol suspend` (root or the SlurmUser only). A job outlives its daemon: the
journal keeps its handle, and the next start re-attaches (`reattach`).
"""
from __future__ import annotations

import os
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from puppemon.formats import ENV_NAME_RE
from puppemon.run.backend import Launch, StartFailed
from puppemon.run.slurmctl import ENDED, GONE, Jobs, SlurmError, call, final, last_line, submit

POLL = 0.5          # how often squeue is asked about the jobs in flight
EXIT_WAIT = 2.0     # after the job left squeue, how long its exit file may take to show (a shared file system)
ASK_EVERY = 0.25    # once the exit file is there, how often scontrol is asked whether Slurm ended the job
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class SlurmConfig:
    """`slurm_shared_dir` and `sbatch_args` of the server (never the flows branch)."""

    shared_dir: Path | None = None          # seen by the daemon and the compute nodes; Slurm is off without it
    sbatch_args: tuple[str, ...] = ()       # flags every sbatch gets, before the flow's own
    poll: float = POLL

    @property
    def runs_dir(self) -> Path | None:
        return self.shared_dir / "runs" if self.shared_dir else None

    @property
    def envs_dir(self) -> Path | None:
        return self.shared_dir / "envs" if self.shared_dir else None


@dataclass(frozen=True)
class JobFiles:
    """The files of attempt `attempt` in a run's area."""

    area: Path
    attempt: int

    @property
    def script(self) -> Path:
        return self.area / f"job-{self.attempt}.sh"

    @property
    def env(self) -> Path:
        return self.area / f"env-{self.attempt}"

    @property
    def log(self) -> Path:
        return self.area / f"slurm-{self.attempt}.log"

    @property
    def exit(self) -> Path:
        return self.area / f"exit-{self.attempt}"


class SlurmExecution:
    """One attempt as a Slurm job, followed through its files and `Jobs`."""

    escaped = 0
    backend = "slurm"   # it outlives its daemon: the status names it, with its handle (daemon/failover.py)

    def __init__(self, jobs: Jobs, job: str, files: JobFiles, grace: float,
                 output: Callable[[bytes], None] | None, started: float) -> None:
        self.jobs, self.job, self.files, self.grace, self.output = jobs, job, files, grace, output
        self.started = started          # time.time() of the submit (a re-attached run's timeout counts from it)
        self.log = None   # the job's output file, once it is there
        self.paused = self.forced = False
        self.stop_at: float | None = None
        self.left_at: float | None = None   # when squeue first showed it ended with no exit file yet
        self.asked: tuple[float, str | None] | None = None   # (when, what) scontrol last said, after the exit file
        self.exited_at: float | None = None   # when its exit file was first seen
        self.result: int | None = None
        self.outcome: tuple[str, int | None, str] | None = None   # Slurm's own verdict (its time limit, ...)

    @property
    def running(self) -> bool:
        return self.result is None

    @property
    def area(self) -> Path:
        return self.files.area

    @property
    def attempt(self) -> int:
        return self.files.attempt

    def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.result is None:
            self._pump()
            if self.stop_at is not None and not self.forced and time.monotonic() > self.stop_at + self.grace:
                self.kill()
            self.result = self._ended()
            left = end - time.monotonic()
            if self.result is None and left <= 0:
                return None
            if self.result is None:
                time.sleep(min(left, 0.05))
        return self.result

    def _pump(self) -> None:
        if self.log is None:
            try:
                self.log = open(self.files.log, "rb")
            except FileNotFoundError:
                return   # not started yet
        while data := self.log.read(CHUNK):
            self.output(data)

    def _ended(self) -> int | None:
        """The attempt's exit status once it is over (the job wrote its exit file, or Slurm says it ended)."""
        code = self._exit_file()
        if code is not None:
            if self.exited_at is None:
                self.exited_at = time.monotonic()
            # its limit or an scancel may have ended the flow: Slurm knows, once the job's state is final
            state = self._state_after_exit() if self.stop_at is None else None
            if state not in ENDED and state is not None and time.monotonic() - self.exited_at < EXIT_WAIT:
                return None
            self._pump()
            if state in ("TIMEOUT", "DEADLINE", "CANCELLED", "OUT_OF_MEMORY", "PREEMPTED"):
                self._verdict(state, code)
            return code
        if self.jobs.state(self.job) not in ENDED:
            return None
        if self.left_at is None:
            self.left_at = time.monotonic()
        state, code = _final(self.job) if time.monotonic() - self.left_at >= EXIT_WAIT else (None, None)
        if state is None:
            return None   # not yet, or the controller does not answer: ask again
        self._pump()
        return self._verdict(state, code)

    def _state_after_exit(self) -> str | None:
        """The job's state as scontrol tells it, asked again at most every ASK_EVERY seconds."""
        now = time.monotonic()
        if self.asked is None or now - self.asked[0] >= ASK_EVERY:
            self.asked = (now, _final(self.job)[0])
        return self.asked[1]

    def _exit_file(self) -> int | None:
        try:
            text = self.files.exit.read_text().strip()
        except FileNotFoundError:
            return None
        return int(text) if text.isdigit() else 1

    def _verdict(self, state: str, code: int | None) -> int:
        """The exit status for a job that ended as `state`; Slurm's own reasons become the attempt's outcome."""
        if self.stop_at is not None and state in ("CANCELLED", "COMPLETED", "FAILED", GONE):
            return -9 if self.forced else -15   # we stopped it: the runner knows why (timeout, cancel)
        if state == "COMPLETED" or (state == "FAILED" and code):
            return code or 0
        outcomes = {
            "CANCELLED": ("cancelled", 130, f"cancelled in Slurm (scancel of job {self.job})"),
            "TIMEOUT": ("timed_out", 124, "timed out: the job's Slurm time limit (--time, slurm.time) ran out"),
            "DEADLINE": ("timed_out", 124, "timed out: the job reached its Slurm deadline"),
            "OUT_OF_MEMORY": ("failed", 137, "killed: out of memory (Slurm OUT_OF_MEMORY: it went over its "
                                             "--mem, slurm.mem)"),
            "PREEMPTED": ("failed", None, f"preempted by Slurm (job {self.job})"),
            GONE: ("crashed", None, f"Slurm job {self.job} is gone and left no exit status (it ended while "
                                    "no daemon followed it, and the controller no longer knows it)"),
        }
        self.outcome = outcomes.get(state) or ("crashed" if state in ("NODE_FAIL", "BOOT_FAIL") else "failed",
                                                code, f"Slurm job {self.job} ended {state}")
        return code if code is not None else 1

    def stop(self) -> None:
        if self.stop_at is None:
            self.stop_at = time.monotonic()
            threading.Thread(target=self._signal, args=("TERM",), name=f"scancel-{self.job}", daemon=True).start()

    def _signal(self, signal: str) -> None:
        try:
            if self.paused:
                call("scontrol", "resume", self.job, check=False)
            state = self.jobs.state(self.job)
            proc = call("scancel", f"--signal={signal}", "--full", self.job, check=False) \
                if state not in (None, "PENDING") else None
            if proc is None or proc.returncode != 0 or signal == "KILL":
                call("scancel", self.job, check=False)   # a pending job has nothing to signal: withdraw it
        except SlurmError:
            pass

    def kill(self) -> None:
        self.forced = True
        self.stop_at = self.stop_at or time.monotonic()
        self._signal("KILL")

    def pause(self) -> None:
        try:
            proc = call("scontrol", "suspend", self.job, check=False)
            why = None if proc.returncode == 0 else last_line(proc.stderr)
        except SlurmError as exc:
            why = exc.message
        self.paused = why is None
        if why:
            self.output(f"puppemon: could not suspend Slurm job {self.job}: {why} "
                        "(scontrol suspend needs root or the SlurmUser)\n".encode())

    def resume(self) -> None:
        if self.paused:
            try:
                call("scontrol", "resume", self.job, check=False)
            except SlurmError as exc:
                self.output(f"puppemon: could not resume Slurm job {self.job}: {exc.message}\n".encode())
            self.paused = False

    def handle(self) -> dict:
        return {"job": self.job, "area": str(self.files.area), "attempt": self.files.attempt,
                "submitted": self.started}

    def close(self) -> None:
        try:
            if self.result is None and not self.forced:
                self.kill()   # an exception in the runner: the job must not go on alone
        finally:
            self.jobs.forget(self.job)
            self.files.env.unlink(missing_ok=True)
            if self.log is not None:
                self.log.close()


class SlurmBackend:
    """Runs each attempt as a Slurm job (`slurm:` in the manifest) on the server's shared directory."""

    name = "slurm"

    def __init__(self, config: SlurmConfig | None = None) -> None:
        self.config = config or SlurmConfig()
        self.jobs = Jobs(self.config.poll)

    @property
    def area_root(self) -> Path | None:
        """Where the runner makes each run's area: on the shared directory."""
        root = self.config.runs_dir
        if root is not None:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)
        return root

    def start(self, launch: Launch, output: Callable[[bytes], None]) -> SlurmExecution:
        if self.config.shared_dir is None:
            raise StartFailed(1, "this daemon has no slurm_shared_dir: set it (--slurm-shared-dir) to run "
                                 "slurm: flows")
        area = Path(launch.env["PUPPEMON_OUTPUT_DIR"]).parent
        files = JobFiles(area, launch.attempt)
        _write(files.env, "".join(f"export {k}={shlex.quote(v)}\n" for k, v in launch.env.items()
                                  if ENV_NAME_RE.match(k)), 0o600)
        _write(files.script, _script(files, launch), 0o700)
        options = [f"--job-name=puppemon-{launch.flow.name}", f"--output={files.log}", f"--chdir={area}",
                   "--no-requeue", "--export=ALL", *self.config.sbatch_args,
                   *launch.flow.slurm.sbatch_options(launch.flow.timeout)]
        files.log.unlink(missing_ok=True)
        files.exit.unlink(missing_ok=True)
        submitted = time.time()
        try:
            job = submit(options, str(files.script), lambda line: output(f"{line}\n".encode()))
        except SlurmError as exc:
            files.env.unlink(missing_ok=True)
            raise StartFailed(1, exc.message) from None
        output(f"puppemon: submitted as Slurm job {job}\n".encode())
        self.jobs.follow(job)
        return SlurmExecution(self.jobs, job, files, launch.grace, output, submitted)

    def reattach(self, handle: dict, grace: float) -> SlurmExecution | None:
        """The attempt a previous daemon followed (its journal's handle), to follow on (its `output` is set
        before the first `wait`); None when there is nothing to follow (no job id, or its area is gone)."""
        job, area = str(handle.get("job") or ""), Path(str(handle.get("area") or "/nonexistent"))
        if not job.isdigit() or not area.is_dir():
            return None
        self.jobs.follow(job)
        if _final(job)[0] == "SUSPENDED":   # frozen when its daemon died: nobody is left to resume it
            call("scontrol", "resume", job, check=False)
        return SlurmExecution(self.jobs, job, JobFiles(area, int(handle.get("attempt") or 1)), grace, None,
                              float(handle.get("submitted") or time.time()))

    def outlives(self, handle: dict) -> bool:
        """Whether the job of `handle` (a gone daemon's, from its status) still runs: then no other daemon
        records it crashed, as its own daemon follows it on when it comes back."""
        job = str(handle.get("job") or "")
        if not job.isdigit():
            return False
        seen = Jobs.ask([job])   # None: Slurm does not answer now, which says nothing of the job
        return seen is None or seen.get(job, GONE) not in ENDED

    def recover(self, handle: dict) -> str | None:
        """Cancel the job a crashed daemon left and remove its area."""
        from puppemon.run.workspace import rmtree

        job, area = str(handle.get("job") or ""), handle.get("area")
        if job.isdigit():
            call("scancel", job, check=False)
        if area and Path(area).is_dir() and self.config.runs_dir and Path(area).parent == self.config.runs_dir:
            rmtree(Path(area))
        return f"its Slurm job {job} cancelled" if job.isdigit() else None


def _final(job: str) -> tuple[str | None, int | None]:
    """slurmctl.final, or (None, None) when Slurm does not answer."""
    try:
        return final(job)
    except SlurmError:
        return None, None


def _script(files: JobFiles, launch: Launch) -> str:
    argv = " ".join(shlex.quote(a) for a in launch.argv)
    env, done = shlex.quote(str(files.env)), shlex.quote(str(files.exit))
    return (f"#!/bin/sh\n# puppemon: run {launch.run_id} of flow {launch.flow.name}, attempt {launch.attempt}\n"
            f". {env} || exit 125\nrm -f {env}\n"
            "trap 'puppemon_stopping=1' TERM   # the shell lives on to write the exit status; the flow gets it\n"
            f"cd {shlex.quote(str(launch.cwd))} || exit 125\n{argv}\nstatus=$?\n"
            f"printf '%s\\n' \"$status\" > {done}.tmp && mv -f {done}.tmp {done}\nexit \"$status\"\n")


def _write(path: Path, text: str, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
        fh.write(text)
    os.chmod(path, mode)
