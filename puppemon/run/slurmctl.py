"""Talking to Slurm through its own commands: submit, follow, signal, suspend, and what a job ended as.

Every call is one of Slurm's client programs (`sbatch`, `squeue`, `scontrol`,
`scancel`, `sacct`, `sinfo`) with the daemon's environment minus puppemon's own
variables (its tokens), so `SLURM_CONF` and the other `SLURM_*`/`SBATCH_*`
settings of the server reach them. The states of the jobs in flight come from
one `squeue` for all of them per poll (`Jobs`), not one per job.
"""
from __future__ import annotations

import os
import re
import subprocess
import threading
import time

from puppemon.errors import PuppemonError

CALL_TIMEOUT = 30.0
SUBMIT_DELAYS = (1.0, 2.0, 4.0)     # sbatch retried after these pauses when the controller does not answer
RETRYABLE = re.compile(r"(?i)unable to contact|not responding|timed? ?out|connection refused|connect failure"
                       r"|communication|try again|temporarily")
GONE = "GONE"   # the state of a job the controller does not know (any more)
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "BOOT_FAIL", "DEADLINE",
         "PREEMPTED", "SPECIAL_EXIT", "REVOKED", GONE}


class SlurmError(PuppemonError):
    """A Slurm command is missing or failed; the message says which and why."""


def call(program: str, *args: str, timeout: float = CALL_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PUPPEMON_")}
    try:
        proc = subprocess.run([program, *args], capture_output=True, text=True, timeout=timeout, env=env,
                              stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise SlurmError(f"{program} is not installed on this server (install Slurm's client commands, e.g. "
                         "apt install slurm-client, or run this flow without slurm:)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{program} did not answer within {timeout:g}s (is slurmctld up?)") from None
    if check and proc.returncode != 0:
        raise SlurmError(f"{program} {' '.join(args[:2])}: {last_line(proc.stderr or proc.stdout)}")
    return proc


def last_line(text: str) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line.removeprefix("sbatch: error: ").removeprefix("scontrol: error: ")
    return lines[-1] if lines else "no output"


def submit(options: list[str], script: str, say) -> str:
    """`sbatch --parsable` of `script`: the job id. A controller that does not answer is asked again after
    each of SUBMIT_DELAYS (`say` tells the run's log); SlurmError with the last reason when it never does."""
    for delay in (*SUBMIT_DELAYS, None):
        proc = call("sbatch", "--parsable", *options, script, check=False, timeout=60)
        job = proc.stdout.strip().split(";")[0]
        if proc.returncode == 0 and job.isdigit():
            return job
        reason = last_line(proc.stderr or proc.stdout)
        if delay is None or not RETRYABLE.search(reason):
            tries = len(SUBMIT_DELAYS) + 1 if delay is None else None
            raise SlurmError(f"sbatch failed{f' {tries} times' if tries else ''}: {reason}")
        say(f"puppemon: sbatch failed ({reason}); trying again in {delay:g}s")
        time.sleep(delay)
    raise AssertionError("unreachable")


def final(job: str) -> tuple[str, int | None]:
    """What `job` ended as, (state, exit code), from the controller, else from accounting; (GONE, None)
    when neither knows it (no slurmdbd, and it left the controller's memory after MinJobAge)."""
    proc = call("scontrol", "show", "job", "-o", job, check=False)
    fields = dict(part.split("=", 1) for part in proc.stdout.split() if "=" in part) if proc.returncode == 0 else {}
    if fields.get("JobState"):
        return fields["JobState"], _exit_code(fields.get("ExitCode", ""))
    proc = call("sacct", "-n", "-X", "-P", "-o", "State,ExitCode", "-j", job, check=False)
    line = proc.stdout.strip().splitlines()[0] if proc.returncode == 0 and proc.stdout.strip() else ""
    if "|" in line:
        state, code = line.split("|", 1)
        return state.split()[0], _exit_code(code)
    return GONE, None


def _exit_code(text: str) -> int | None:
    code, _, signal = text.partition(":")
    if not code.isdigit():
        return None
    return -int(signal) if signal.isdigit() and int(signal) and not int(code) else int(code)


def partitions() -> set[str]:
    """The partitions the cluster has (`sinfo`)."""
    return {p.rstrip("*") for p in call("sinfo", "-h", "-o", "%R").stdout.split()}


class Jobs:
    """The states of the jobs this daemon follows: a thread asks `squeue` about all of them once per `poll`."""

    def __init__(self, poll: float) -> None:
        self.poll = poll
        self.states: dict[str, str | None] = {}   # job -> its last state seen (None: not asked yet)
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def follow(self, job: str) -> None:
        with self.lock:
            self.states.setdefault(job, None)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._loop, name="slurm-jobs", daemon=True)
                self.thread.start()

    def forget(self, job: str) -> None:
        with self.lock:
            self.states.pop(job, None)

    def state(self, job: str) -> str | None:
        with self.lock:
            return self.states.get(job)

    def _loop(self) -> None:
        while True:
            with self.lock:
                jobs = sorted(self.states)
                if not jobs:
                    self.thread = None
                    return
            seen = self.ask(jobs)
            if seen is not None:   # squeue answered (a controller that does not answer changes nothing)
                with self.lock:
                    for job in jobs:
                        if job in self.states:
                            self.states[job] = seen.get(job, GONE)
            time.sleep(self.poll)

    @staticmethod
    def ask(jobs: list[str]) -> dict[str, str] | None:
        """The state of each of `jobs` that the controller knows; None when squeue does not answer."""
        try:
            proc = call("squeue", "-h", "-t", "all", "-o", "%i %T", "-j", ",".join(jobs), check=False, timeout=20)
        except SlurmError:
            return None
        if proc.returncode != 0:
            return {} if "invalid job id" in proc.stderr.lower() else None
        return dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split(None, 1)) == 2)
