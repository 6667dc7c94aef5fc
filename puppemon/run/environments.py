"""Python environments for flows, built with uv, cached by what decides them, shared by flows and deploys.

An environment is a relocatable virtual environment under a cache root (the daemon's
`STATE/envs`, or `~/.cache/puppemon/envs` for `puppemon run`), named by its key: a hash
of the files that decide it (requirements, pyproject.toml + uv.lock, a script's
metadata), the interpreter (version, implementation, path), the platform and uv's
index settings from this process's environment (`UV_INDEX_URL`, `UV_FIND_LINKS`,
`UV_NO_INDEX`, `UV_OFFLINE`, ...), never from the flows branch. It is built in a
temporary directory and renamed into place once complete, so a build killed halfway
is never used; one build per key at a time (a lock file), however many deploys or
processes ask. Flow code imports `puppemon` (the flow API) from a small directory of
its own (`flow_api`), not from the daemon's site-packages.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import platform
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from puppemon.errors import PuppemonError
from puppemon.formats import format_duration, utc_iso
from puppemon.run.processes import dies_with_parent

FORMAT = 1
MARKER = "puppemon-env.json"
INDEX_SETTINGS = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_EXTRA_INDEX_URL", "UV_INDEX", "UV_FIND_LINKS",
                  "UV_NO_INDEX", "UV_OFFLINE", "UV_INDEX_STRATEGY", "UV_CONFIG_FILE", "UV_NO_CONFIG")
BUILD_TIMEOUT = 600.0     # the daemon's default: puppemon.daemon.BUILD_TIMEOUT, --build-timeout
KEEP_UNUSED = 3      # environments no deploy or run uses that `collect` keeps (the most recently used)
ERROR_LINES = 15     # of uv's output, in a refusal


class EnvError(PuppemonError):
    """An environment that cannot be built here; the message has uv's own lines."""


@dataclass(frozen=True)
class Environment:
    key: str
    path: Path
    python: str             # "3.11.7"
    packages: tuple[str, ...]

    @property
    def interpreter(self) -> Path:
        return self.path / "bin" / "python"

    def record(self) -> dict:
        """What run.json says of it."""
        return {"key": self.key, "python": self.python}


@dataclass(frozen=True)
class Request:
    """What to build: the flow's `python:` (project/python.py), its deciding files, where they are."""

    kind: str                      # requirements | project | script | version
    files: dict[str, bytes]        # project path -> content (what decides the environment)
    source: Path                   # the checkout (or project directory) the paths are relative to
    path: str | None = None
    version: str | None = None
    what: str = ""                 # for messages: "requirements requirements.txt"


def request_for(flow, source: Path, read) -> Request:
    """What to build for `flow` (whose `python:` is not system), its files read with `read` from `source`;
    ValueError when one is missing."""
    from puppemon.project.python import inputs, script_dependencies

    env = flow.python
    files = inputs(flow, read)
    version = env.version
    if env.kind == "script" and version is None:
        [(_, data)] = files.items()
        version = script_dependencies(data.decode("utf-8", "replace"))[1]  # its requires-python
    return Request(env.kind, files, Path(source), env.path, version, env.describe())


def find_uv() -> str:
    """The uv binary: on PATH, next to this Python, or from the `uv` package; EnvError saying how to get it."""
    found = shutil.which("uv") or shutil.which("uv", path=os.path.dirname(sys.executable))
    if found:
        return found
    try:
        from uv import find_uv_bin  # the PyPI package `uv` (puppemon[uv])

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        raise EnvError("uv is not installed on this server, and flows that declare `python:` need it: "
                       f"run `{sys.executable} -m pip install uv` (or install puppemon[uv])") from None


def uv_env() -> dict[str, str]:
    """This process's environment for uv: its index settings are the server's, nothing of puppemon's."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith("PUPPEMON_") and k not in ("VIRTUAL_ENV", "UV_PROJECT_ENVIRONMENT")}


class Builder:
    """Runs uv for one build, with a deadline; UV errors become EnvError with uv's last lines."""

    def __init__(self, uv: str, timeout: float, what: str) -> None:
        self.uv, self.deadline, self.what, self.timeout = uv, time.monotonic() + timeout, what, timeout

    def __call__(self, *args: str, cwd: Path | None = None, env: dict | None = None) -> str:
        left = self.deadline - time.monotonic()
        proc = subprocess.Popen([self.uv, *args], cwd=cwd, env={**uv_env(), **(env or {})},
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True, preexec_fn=dies_with_parent())
        try:
            out, err = proc.communicate(timeout=max(left, 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise EnvError(f"building the environment ({self.what}) took longer than "
                           f"{format_duration(self.timeout)}: stopped") from None
        if proc.returncode:
            lines = [line for line in err.splitlines() if line.strip()][-ERROR_LINES:]
            raise EnvError(f"uv could not build the environment ({self.what}):\n" +
                           "\n".join(f"  {line}" for line in lines))
        return out


@dataclass(frozen=True)
class Interpreter:
    path: str
    version: str
    implementation: str


_found: dict[str, Interpreter] = {}   # version request -> interpreter, for the life of this process


def find_python(version: str | None, uv: str) -> Interpreter:
    """The interpreter for a version request (None: this process's own); EnvError naming what is installed.
    A request found once is not asked again while its interpreter is there (a deploy pays no probe)."""
    if version is None:
        return Interpreter(os.path.realpath(sys.executable), platform.python_version(), sys.implementation.name)
    known = _found.get(version)
    if known is not None and os.path.exists(known.path):
        return known
    _found[version] = found = _probe(version, uv)
    return found


def _probe(version: str, uv: str) -> Interpreter:
    proc = subprocess.run([uv, "python", "find", version], capture_output=True, text=True, env=uv_env())
    if proc.returncode:
        raise EnvError(f"no Python {version} on this server, and uv may not fetch one "
                       f"(installed: {', '.join(installed_pythons(uv)) or 'none found'}); install it, or "
                       "allow downloads (UV_PYTHON_DOWNLOADS=automatic)")
    path = proc.stdout.strip().splitlines()[-1]
    probe = "import platform, sys; print(platform.python_version(), sys.implementation.name)"
    out = subprocess.run([path, "-c", probe], capture_output=True, text=True).stdout.split()
    if len(out) != 2:
        raise EnvError(f"the Python at {path} does not run")
    return Interpreter(os.path.realpath(path), out[0], out[1])


def installed_pythons(uv: str) -> list[str]:
    proc = subprocess.run([uv, "python", "list", "--only-installed", "--output-format", "json"],
                          capture_output=True, text=True, env=uv_env())
    try:
        return sorted({p["version"] for p in json.loads(proc.stdout)})
    except (ValueError, TypeError, KeyError):
        return []


def key_of(request: Request, python: Interpreter) -> str:
    decided = {"format": FORMAT, "kind": request.kind, "path": request.path,
               "files": {p: hashlib.sha256(d).hexdigest() for p, d in sorted(request.files.items())},
               "python": [python.path, python.version, python.implementation],
               "platform": [sys.platform, platform.machine()],
               "index": {k: os.environ.get(k) for k in INDEX_SETTINGS if os.environ.get(k)}}
    return hashlib.sha256(json.dumps(decided, sort_keys=True).encode()).hexdigest()[:32]


class EnvStore:
    """The environments under `root`, built on demand."""

    def __init__(self, root: Path, timeout: float = BUILD_TIMEOUT) -> None:
        self.root, self.timeout = Path(root), timeout

    def cached(self, request: Request) -> Environment | None:
        """The environment for `request` if it is built already (nothing is built)."""
        found = self.get(key_of(request, find_python(request.version, find_uv())))
        if found is not None:
            _used(found)
        return found

    def get(self, key: str) -> Environment | None:
        try:
            meta = json.loads((self.root / key / MARKER).read_text())
        except (OSError, ValueError):
            return None
        return Environment(key, self.root / key, meta["python"], tuple(meta["packages"]))

    def ensure(self, request: Request, rebuild: bool = False) -> Environment:
        """The environment for `request`, built now when there is none yet (EnvError when it cannot be)."""
        uv = find_uv()
        python = find_python(request.version, uv)
        key = key_of(request, python)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.root / f".lock-{key}", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build per key: a second asker waits and finds it made
            found = None if rebuild else self.get(key)
            if found is None:
                found = self._build(key, request, python, uv)
        _used(found)
        return found

    def _build(self, key: str, request: Request, python: Interpreter, uv: str) -> Environment:
        run = Builder(uv, self.timeout, request.what or request.kind)
        tmp = self.root / f".tmp-{key}-{os.getpid()}-{secrets.token_hex(3)}"
        try:
            run("venv", "--quiet", "--relocatable", "--python", python.path, str(tmp))
            target = ["--python", str(tmp / "bin" / "python")]
            if request.kind == "requirements":
                run("pip", "install", "--quiet", *target, "-r", str(request.source / request.path),
                    cwd=request.source)
            elif request.kind == "project":
                project = request.source / request.path
                check_lock_index(request.files)
                run("sync", "--quiet", "--locked", "--no-install-project", "--project", str(project),
                    "--python", python.path, cwd=project, env={"UV_PROJECT_ENVIRONMENT": str(tmp)})
            elif request.kind == "script":
                from puppemon.project.python import script_dependencies

                [(_, data)] = request.files.items()
                deps, _ = script_dependencies(data.decode("utf-8", "replace"))
                if deps:
                    (tmp / ".puppemon-requirements.txt").write_text("\n".join(deps) + "\n")
                    run("pip", "install", "--quiet", *target, "-r", str(tmp / ".puppemon-requirements.txt"))
            packages = tuple(line for line in run("pip", "freeze", *target).splitlines() if line.strip())
            meta = {"key": key, "python": python.version, "implementation": python.implementation,
                    "interpreter": python.path, "packages": list(packages),
                    "built": utc_iso(datetime.now(timezone.utc))}
            (tmp / MARKER).write_text(json.dumps(meta, indent=2) + "\n")
            if (self.root / key).exists():  # --rebuild: the new one replaces the old
                shutil.rmtree(self.root / key)
            os.rename(tmp, self.root / key)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return Environment(key, self.root / key, python.version, packages)

    def collect(self, in_use: set[str], keep: int = KEEP_UNUSED) -> list[str]:
        """Remove environments nothing uses but the `keep` most recently used, and builds that died
        halfway (their process is gone); the keys removed."""
        if not self.root.is_dir():
            return []
        removed = []
        for tmp in self.root.glob(".tmp-*"):
            pid = tmp.name.split("-")[2]
            if pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
                shutil.rmtree(tmp, ignore_errors=True)
        current = flow_api(self.root).name
        for api in self.root.glob(".flow-api-*"):  # an older puppemon's, a day after it was last made
            if api.name != current and time.time() - api.stat().st_mtime > 86400:
                shutil.rmtree(api, ignore_errors=True)
        unused = sorted((d for d in self.root.iterdir() if not d.name.startswith(".") and d.name not in in_use),
                        key=lambda d: _last_used(d), reverse=True)
        for d in unused[keep:]:
            shutil.rmtree(d, ignore_errors=True)
            (self.root / f".lock-{d.name}").unlink(missing_ok=True)
            removed.append(d.name)
        return removed


def _used(env: Environment) -> None:
    """Note that `env` is used now (its marker's mtime), which `collect` keeps the most recent by."""
    try:
        os.utime(env.path / MARKER)
    except OSError:
        pass


def _last_used(directory: Path) -> float:
    try:
        return (directory / MARKER).stat().st_mtime
    except OSError:
        return 0.0


REGISTRY = re.compile(r'source\s*=\s*\{\s*registry\s*=\s*"([^"]+)"')


def check_lock_index(files: dict[str, bytes]) -> None:
    """A frozen sync downloads from the URLs in uv.lock, not from UV_INDEX_URL: a lock made against another
    index than the server's cannot be installed from its mirror; say so before uv tries."""
    index = (os.environ.get("UV_DEFAULT_INDEX") or os.environ.get("UV_INDEX_URL") or "").rstrip("/")
    if not index:
        return
    lock = next((d for p, d in files.items() if p.endswith("uv.lock")), b"").decode("utf-8", "replace")
    others = sorted({url.rstrip("/") for url in REGISTRY.findall(lock)} - {index})
    others = [url for url in others if "://" in url]  # a find-links directory is not an index
    if others:
        raise EnvError(f"uv.lock was made against {others[0]}, but this server's index is {index}: a frozen "
                       "install downloads from the URLs in the lock, so lock it again against that index "
                       f"(uv lock --default-index {index}) and push")


_api_dirs: dict[Path, Path] = {}   # root -> its flow-API directory, made once per process


def flow_api(root: Path) -> Path:
    """A directory holding only the flow API (`puppemon`, and the bootstrap that calls a flow's function),
    for PYTHONPATH inside an environment: flow code imports puppemon without its dependencies."""
    known = _api_dirs.get(Path(root))
    if known is not None and known.is_dir():
        return known
    import puppemon
    import puppemon.run.bootstrap as bootstrap

    sources = {"puppemon/__init__.py": Path(puppemon.__file__).read_bytes(),
               "puppemon/run/__init__.py": b"",
               "puppemon/run/bootstrap.py": Path(bootstrap.__file__).read_bytes()}
    digest = hashlib.sha256(b"".join(sources.values())).hexdigest()[:16]
    target = Path(root) / f".flow-api-{digest}"
    if not target.is_dir():
        tmp = Path(root) / f".tmp-api-{os.getpid()}-{secrets.token_hex(3)}"
        for name, data in sources.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_bytes(data)
        try:
            os.rename(tmp, target)
        except OSError:  # another process made it first
            shutil.rmtree(tmp, ignore_errors=True)
    _api_dirs[Path(root)] = target
    return target
