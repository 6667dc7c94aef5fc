"""A single-node Slurm cluster on 127.0.0.1 for the tests and benchmarks: munged, slurmctld and slurmd
from Debian's packages, with a generated slurm.conf (ports of their own, state and spool in a temp
directory, proctrack/linuxproc, task/none, one node named after this host), started and stopped by pid."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.conftest import unavailable

PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "scancel", "sinfo")
MIN_JOB_AGE = 5   # seconds a finished job stays in the controller's memory (the default is 300)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _program(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)),
                                      None)


CONF = """\
ClusterName=puppemon-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/ctld
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MinJobAge={min_job_age}
KillWait=5
NodeName={host} NodeAddr=127.0.0.1 CPUs=64 RealMemory=16000 State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
PartitionName=big Nodes={host} MaxTime=INFINITE State=UP
"""


class Cluster:
    """munged + slurmctld + slurmd in `root`; `env` is what a client (a daemon) needs to reach it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.host = socket.gethostname().split(".")[0]
        self.conf = root / "slurm.conf"
        self.procs: list[subprocess.Popen] = []

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def start(self) -> Cluster:
        (self.root / "munge").mkdir(mode=0o700)
        for d in ("ctld", "spool"):
            (self.root / d).mkdir()
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.conf.write_text(CONF.format(host=self.host, root=self.root, ctld_port=_free_port(), d_port=_free_port(),
                                         min_job_age=MIN_JOB_AGE))
        m = self.root / "munge"
        self._spawn("munged", "-F", "-f", f"--key-file={key}", f"--socket={m}/munge.socket",
                    f"--pid-file={m}/munged.pid", f"--seed-file={m}/seed", f"--log-file={m}/munged.log")
        self._wait(lambda: (m / "munge.socket").exists(), "munged's socket")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._wait(lambda: self.call("sinfo", "-h").returncode == 0, "slurmctld to answer")
        self._spawn("slurmd", "-D", "-f", str(self.conf), "-N", self.host)
        self._wait(lambda: "idle" in self.call("sinfo", "-h", "-o", "%T").stdout, "the node to be idle")
        return self

    def _spawn(self, name: str, *args: str) -> None:
        log = open(self.root / f"{name}.out", "wb")
        self.procs.append(subprocess.Popen([_program(name), *args], stdout=log, stderr=subprocess.STDOUT,
                                           env=self.env, start_new_session=True))

    def _wait(self, condition, what: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            dead = [p for p in self.procs if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                self.stop()
                unavailable(f"the test Slurm cluster did not start ({what}): {self.logs()}")
            time.sleep(0.1)

    def call(self, *argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=30)

    def state(self, job: str) -> str:
        """The job's state as squeue shows it ('' once the controller has forgotten it)."""
        return self.call("squeue", "-h", "-t", "all", "-o", "%T", "-j", job).stdout.strip()

    def logs(self) -> str:
        parts = []
        for name in ("slurmctld.log", "slurmd.log", "munged.out", "slurmctld.out", "slurmd.out"):
            path = self.root / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text(errors="replace")[-1500:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.procs and all(p.poll() is None for p in self.procs):   # no job may outlive its cluster
            self.call("scancel", "--user", str(os.geteuid()))
            deadline = time.monotonic() + 20
            while self.call("squeue", "-h").stdout.strip() and time.monotonic() < deadline:
                time.sleep(0.2)
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()


def start_cluster() -> Cluster:
    """A started cluster in a new temp directory (short paths: slurmd's sockets live in its spool)."""
    missing = [name for name in PROGRAMS if not _program(name)]
    if missing:
        unavailable(f"Slurm is not installed ({', '.join(missing)} missing: apt install slurm-wlm munge)")
    if os.geteuid() != 0:
        import pytest

        pytest.skip("the test Slurm cluster runs slurmd as root, and this is not root")
    return Cluster(Path(tempfile.mkdtemp(prefix="pm-slurm-"))).start()


def stop_cluster(cluster: Cluster) -> None:
    cluster.stop()
    shutil.rmtree(cluster.root, ignore_errors=True)
