"""Fixtures shared by every test: real git repositories in a scrubbed environment."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

pytest_plugins = ["tests.servers"]

IDENTITY = {"name": "Test User", "email": "test@example.com"}
# pip's download cache of the machine, kept across the scrubbed HOMEs (installs in tests stay fast)
PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "pip")


@pytest.fixture(autouse=True)
def scrubbed_env(tmp_path_factory, monkeypatch):
    """HOME in a tmp dir, no system git config, no inherited GIT_*, a fixed identity."""
    home = tmp_path_factory.mktemp("home")
    for key in list(os.environ):
        if key.startswith("GIT_") or key.startswith("PUPPEMON_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    monkeypatch.setenv("TZ", "UTC")
    # `python -m puppemon` in a subprocess runs this checkout, whatever an installed copy points at
    monkeypatch.setenv("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    # and keeps its bytecode, as an installed one does: with PYTHONDONTWRITEBYTECODE (some shells set it)
    # every process a test starts compiled each module it imported, a fifth of the suite's time
    monkeypatch.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
    templates = home / "git-templates"
    templates.mkdir()
    (home / ".gitconfig").write_text(
        "[user]\n"
        f"\tname = {IDENTITY['name']}\n"
        f"\temail = {IDENTITY['email']}\n"
        "[init]\n"
        "\tdefaultBranch = main\n"
        f"\ttemplateDir = {templates}\n"
        "[protocol \"file\"]\n"
        "\tallow = always\n"
        "[advice]\n"
        "\tdetachedHead = false\n"
    )
    return home


def unavailable(message: str) -> None:
    """A component a test needs is missing or not allowed here: skip on a developer machine, but fail in CI,
    where .ci/run installs everything and runs as root (a skip there is a missing install step)."""
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI must provide it: see .ci/run)")
    pytest.skip(message)


def proc_files(name: str) -> list[bytes]:
    """/proc/<pid>/<name> of every process this one may read (another user's may not be, and a process may
    exit while it is read: those are left out)."""
    found = []
    for path in Path("/proc").glob(f"[0-9]*/{name}"):
        try:
            found.append(path.read_bytes())
        except OSError:
            pass
    return found


def wait_until(condition: Callable[[], object], timeout: float = 30, what: str = "condition",
               on_fail: Callable[[], str] = lambda: "", interval: float = 0.05) -> object:
    """Poll `condition` until it returns something truthy (and return it); fail naming `what` after `timeout` s.

    The one way tests wait for something: never a bare sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}\n{on_fail()}")
        time.sleep(interval)


def git(*args, cwd=None, check=True, env=None) -> str:
    """Run the real git binary (the test's oracle) and return its stdout."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=full_env)
    if check and proc.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc.stdout


def puppemon(*args, cwd=None, check=True, env=None, input=None, timeout=120) -> subprocess.CompletedProcess:
    """Run the real `puppemon` CLI in a subprocess."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run([sys.executable, "-m", "puppemon", *args], cwd=cwd, capture_output=True,
                          text=True, env=full_env, input=input, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"puppemon {' '.join(args)} exited {proc.returncode}\n"
                             f"stdout: {proc.stdout}\nstderr: {proc.stderr}")
    return proc


def puppemon_on_terminal(*args, cwd=None, env=None, timeout=120) -> str:
    """Run the real `puppemon` CLI with its stdout on a pseudo-terminal, as at a user's terminal, and
    return what it wrote there (line ends as the terminal sends them back: \\r\\n)."""
    import pty

    full_env = dict(os.environ, TERM="xterm-256color", COLUMNS="200")
    full_env.pop("NO_COLOR", None)
    if env:
        full_env.update(env)
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "puppemon", *args], cwd=cwd, stdout=slave,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=full_env)
    finally:
        os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    _, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"puppemon {' '.join(args)} exited {proc.returncode}\nstderr: {err.decode()}")
    return b"".join(chunks).decode()


MINIMAL_MANIFEST = """\
version: 1
flows:
  hello:
    command: echo hello
    every: 1h
"""


def make_repo(path: Path, files: dict[str, str] | None = None, commit: bool = True) -> Path:
    """A real git repository at `path` holding `files`, committed when `commit`."""
    path.mkdir(parents=True, exist_ok=True)
    git("init", "--quiet", str(path))
    for name, content in (files or {}).items():
        f = path / name
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(content)
    if commit:
        git("add", "-A", cwd=path)
        git("commit", "--quiet", "--allow-empty", "-m", "initial", cwd=path)
    return path


@pytest.fixture
def bare_remote(tmp_path) -> Path:
    """A bare repository used as the remote, by path."""
    path = tmp_path / "remote.git"
    git("init", "--bare", "--quiet", str(path))
    return path


@pytest.fixture
def project(tmp_path, bare_remote) -> Path:
    """A committed project with a valid puppemon.yaml and `origin` pointing at `bare_remote`."""
    repo = make_repo(tmp_path / "project", {"puppemon.yaml": MINIMAL_MANIFEST, "job.sh": "echo hi\n"})
    git("remote", "add", "origin", str(bare_remote), cwd=repo)
    return repo


@pytest.fixture(scope="module")
def driver():
    """A headless system Chromium for a module's dashboard tests (tests/web_helpers.py)."""
    from tests.web_helpers import browser, close

    chromium = browser()
    yield chromium
    close(chromium)
