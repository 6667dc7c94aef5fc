"""Drive a real `puppemon daemon` process and read what it wrote with the real git binary."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from tests.conftest import git, make_repo, puppemon, wait_until  # noqa: F401 - wait_until: daemon tests use it from here


def manifest_project(tmp_path: Path, remote: str, manifest: str, files: dict[str, str] | None = None,
                     name: str = "project") -> Path:
    repo = make_repo(tmp_path / name, {"puppemon.yaml": manifest, **(files or {})})
    git("remote", "add", "origin", remote, cwd=repo)
    return repo


def deploy(repo: Path, manifest: str | None = None, files: dict[str, str] | None = None) -> None:
    if manifest is not None:
        (repo / "puppemon.yaml").write_text(manifest)
    for name, content in (files or {}).items():
        (repo / name).write_text(content)
    puppemon("push", cwd=repo)


class DaemonProcess:
    """A `puppemon daemon` subprocess with its stderr captured to a file."""

    def __init__(self, remote: str, state: Path, *args: str, name: str = "d1", env: dict | None = None) -> None:
        self.remote, self.state, self.name = remote, state, name
        self.log_path = state.parent / f"{name}-{time.monotonic_ns()}.log"
        self.args = ["--remote", remote, "--state", str(state), "--name", name, "--poll", "0.3", *args]
        # a daemon that does not stop is sent SIGABRT: its threads' stacks go to its log (see `stop`)
        self.env = {**os.environ, "PYTHONFAULTHANDLER": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log_fh = None

    def start(self) -> DaemonProcess:
        self.log_fh = open(self.log_path, "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "puppemon", "daemon", *self.args],
                                     stdout=self.log_fh, stderr=subprocess.STDOUT, env=self.env)
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        """Send `sig` and return the exit code; a daemon still there after `timeout` seconds fails the test
        with its log and where each of its threads was."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.log_fh.close()
            raise AssertionError(f"daemon {self.name} still ran {timeout:g}s after {signal.Signals(sig).name}; "
                                 f"its log, with its threads' stacks:\n{self.log[-30000:]}") from None
        self.log_fh.close()
        return code

    def kill9(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self.log_fh.close()

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.log_fh is not None:
            self.log_fh.close()


def log_of(bare: Path, record: dict) -> str:
    """The log.txt of `record` on the remote's runs branch."""
    from puppemon.formats import run_dir

    return git("--git-dir", str(bare), "show", f"runs:{run_dir(record['flow'], record['id'])}/log.txt")


def frozen_count(path: Path, what: str = "the count to stay") -> str:
    """What the counter file `path` holds once it stops changing (the same twice, 0.3 s apart: a freezer or
    SIGSTOP may reach the flow a little after its state says so), checked to stay so 0.6 s more."""
    def still() -> str | None:
        before = path.read_text()
        time.sleep(0.3)
        return before if path.read_text() == before else None
    frozen = wait_until(still, 10, what)
    time.sleep(0.6)
    assert path.read_text() == frozen   # frozen: it does not count on
    return frozen


def run_daemon_once(remote: str, state: Path, *args: str, name: str = "d1") -> subprocess.CompletedProcess:
    return puppemon("daemon", "--remote", remote, "--state", str(state), "--name", name, "--once", *args,
                    check=False, timeout=120)


def remote_records(bare: Path) -> list[dict]:
    """Every run.json on the remote's runs branch, newest commit first."""
    proc = subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "--verify", "-q", "runs"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        return []
    paths = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs").split("\n")
    records = [json.loads(git("--git-dir", str(bare), "show", f"runs:{p}")) for p in paths
               if p.endswith("/run.json")]
    return sorted(records, key=lambda r: r["id"])


def result_of(bare: Path, record: dict):
    """The result.json recorded beside `record` on the remote's runs branch."""
    from puppemon.formats import run_dir

    return json.loads(git("--git-dir", str(bare), "show", f"runs:{run_dir(record['flow'], record['id'])}/result.json"))


def of_flow(records: list[dict], flow: str, **match) -> list[dict]:
    """The flow's records matching `match`, by scheduled time then id (an in-process test's ids may share
    the time of its clock)."""
    found = [r for r in records if r["flow"] == flow and all(r.get(k) == v for k, v in match.items())]
    return sorted(found, key=lambda r: (r["scheduled"] or "", r["id"]))


def deploy_records(bare: Path) -> list[dict]:
    """The deploy records on the remote's runs branch (none before it exists)."""
    if subprocess.run(["git", "--git-dir", str(bare), "rev-parse", "-q", "--verify", "runs"],
                      capture_output=True).returncode != 0:
        return []
    paths = git("--git-dir", str(bare), "ls-tree", "-r", "--name-only", "runs").split("\n")
    return [json.loads(git("--git-dir", str(bare), "show", f"runs:{p}")) for p in paths
            if p.startswith("deploys/")]


def fsck(bare: Path) -> None:
    git("--git-dir", str(bare), "fsck", "--strict", "--no-dangling")


def linear(bare: Path, ref: str = "runs") -> bool:
    return all(len(p.split()) <= 1 for p in git("--git-dir", str(bare), "log", "--format=%P", ref).splitlines())


def live_group_members(pgid: int) -> list[int]:
    """Pids of processes in group `pgid` that are alive (zombies waiting for a reaper do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as fh:
                fields = fh.read().decode("utf-8", "replace").rsplit(")", 1)[1].split()
        except OSError:
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members
