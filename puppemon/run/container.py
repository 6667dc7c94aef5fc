"""The `container` backend: each attempt is one `podman run` (or `docker run`) of the flow's image.

The run's area (its copy of the code, TMPDIR, outputs, result file) is mounted
read-write at /puppemon, and the working directory is /puppemon/work; paths the
runner gave the attempt are rewritten to those. An entrypoint flow runs the
image's Python with the flow API mounted read-only at /puppemon/api. The
environment goes through an env file only the daemon's user can read (never the
command line); a value with a newline, which an env file cannot hold, through the
engine client's own environment.

The engine client is an attempt of the `local` backend (its output is the run's
log, its exit status the container's); stopping, pausing and killing go to the
engine by the container's name, `puppemon-<run id>-<attempt>`, which also
carries the run id as a label so that crash recovery finds what is left.
"""
from __future__ import annotations

import math
import os
import re
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

from puppemon.project.container import WORK_DIR
from puppemon.run.backend import Launch
from puppemon.run.engine import RUN_LABEL, Engine, EngineConfig, EngineError, last_line
from puppemon.run.local import LocalBackend, LocalExecution
from puppemon.run.processes import reap_adopted

INSIDE = "/puppemon"            # the run's area, inside the container
API = "/puppemon/api"           # the flow API (`import puppemon`), read-only
STOP_MARGIN = 15.0              # after `stop -t GRACE`, how long before the engine client is killed too
TAIL = 4096
MONITORS = ("conmon",)
ENGINE_ERROR = re.compile(r"(?m)^(Error: |docker: Error)")   # exit code 125 from the engine itself, not the flow          # the engine's per-container monitor, which the subreaper adopts


def container_name(run_id: str, attempt: int) -> str:
    return f"puppemon-{run_id}-{attempt}"


class ContainerExecution:
    """One attempt running in a container; `inner` is the engine client running it."""

    def __init__(self, engine: Engine, name: str, inner: LocalExecution, grace: float, memory: int | None,
                 env_file: str, tail: bytearray) -> None:
        self.engine, self.name, self.inner, self.grace, self.memory = engine, name, inner, grace, memory
        self.env_file, self.tail = env_file, tail
        self.removes_itself = memory is None   # `run --rm`; with a memory limit it is kept to ask why it died
        self.forced = False
        self.reason: str | None = None    # once it is over: why, when the engine knows better than the status
        self.paused = False
        self.stop_at: float | None = None
        self.result: int | None = None

    @property
    def escaped(self) -> int | None:
        return self.inner.escaped

    @property
    def running(self) -> bool:
        return self.inner.running

    def wait(self, timeout: float) -> int | None:
        late = self.stop_at is not None and time.monotonic() > self.stop_at + self.grace + STOP_MARGIN
        if late and self.inner.running:
            self.kill()   # the engine did not stop it: force it
        if self.result is None:
            rc = self.inner.wait(timeout)
            if rc is not None:
                self.result = rc
                try:
                    self.reason = self._why(rc)
                except EngineError:
                    self.reason = None   # the engine does not answer: the exit status is all there is
        return self.result

    def _why(self, rc: int) -> str | None:
        if rc == 137 and self.stop_at is None:
            from puppemon.formats import format_size

            proc = self.engine.call("inspect", "--format", "{{.State.OOMKilled}}", self.name, check=False)
            limit = f"its container.memory of {format_size(self.memory)}" if self.memory else "the memory it had"
            if proc.stdout.strip() == "true":
                return f"killed: out of memory (it went over {limit})"
            if self.memory:   # the engine cannot always tell (cgroup v1): nobody else here sends SIGKILL
                return f"killed by SIGKILL, most likely out of memory (it may have gone over {limit})"
        if rc == 125 and self.stop_at is None and ENGINE_ERROR.search(self.tail.decode("utf-8", "replace")):
            return f"{self.engine.kind} could not run the container: {last_line(self.tail.decode('utf-8', 'replace'))}"
        return None

    def stop(self) -> None:
        if self.stop_at is None:
            self.stop_at = time.monotonic()
            threading.Thread(target=self._stop, name=f"stop-{self.name}", daemon=True).start()

    def _stop(self) -> None:
        try:
            if self.paused:
                self.engine.call("unpause", self.name, check=False)
            seconds = str(max(1, math.ceil(self.grace)))
            proc = self.engine.call("stop", "-t", seconds, self.name, check=False, timeout=self.grace + 30)
        except EngineError:
            proc = None
        if proc is None or proc.returncode != 0:
            self.inner.stop()   # no container yet (or no engine answer): stop its client, which passes it on

    def kill(self) -> None:
        self.forced = True
        try:
            self.engine.call("kill", self.name, check=False, timeout=10)
        except EngineError:
            pass
        self.inner.kill()

    def pause(self) -> None:
        try:
            proc = self.engine.call("pause", self.name, check=False)
            why = None if proc.returncode == 0 else last_line(proc.stderr)
        except EngineError as exc:
            why = exc.message
        self.paused = why is None
        if why:
            self.inner.output(f"puppemon: could not pause the container: {why}\n".encode())

    def resume(self) -> None:
        if self.paused:
            try:
                self.engine.call("unpause", self.name, check=False)
            except EngineError as exc:
                self.inner.output(f"puppemon: could not resume the container: {exc.message}\n".encode())
            self.paused = False

    def handle(self) -> dict:
        return {**self.inner.handle(), "container": self.name, "engine": self.engine.program,
                "engine_kind": self.engine.kind}

    def close(self) -> None:
        try:
            self.inner.close()
        finally:
            try:
                if not (self.removes_itself and self.result is not None and not self.forced):
                    self.engine.remove(self.name)   # (an engine client that ended by itself removed it)
            except EngineError:
                pass
            Path(self.env_file).unlink(missing_ok=True)
            reap_adopted(MONITORS)   # podman's conmon detaches: as the subreaper, this process must reap it


class ContainerBackend:
    """Runs each attempt in a container of the flow's image (`container:` in the manifest)."""

    name = "container"

    def __init__(self, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self._engine: Engine | None = None

    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = self.config.find()
        return self._engine

    def _mounts(self, spec) -> list[str]:
        """The `-v` values of the flow's mounts, checked again now (at deploy, a symlink on the way may have
        pointed elsewhere) and given by the real path that was checked."""
        from puppemon.run.backend import StartFailed

        mounts = []
        for mount in spec.mounts:
            refusal = self.config.mount_refusal(mount.host)
            if refusal:
                raise StartFailed(1, f"container.mounts: {refusal}")
            mounts.append(replace(mount, host=os.path.realpath(mount.host)).option())
        return mounts

    def start(self, launch: Launch, output: Callable[[bytes], None]) -> ContainerExecution:
        from puppemon.run.backend import StartFailed

        try:
            engine = self.engine()
        except EngineError as exc:
            raise StartFailed(127, exc.message) from None
        spec = launch.flow.container
        area = Path(launch.env["PUPPEMON_OUTPUT_DIR"]).parent   # the runner's area: outputs, TMPDIR, result
        name = container_name(launch.run_id, launch.attempt)
        env = {k: _inside(v, area) for k, v in launch.env.items()}
        argv = [_inside(a, area) for a in launch.argv]
        volumes = [f"{area}:{INSIDE}:rw"]
        if launch.cwd != area / "work":   # `puppemon run` works in the project itself
            volumes.append(f"{launch.cwd}:{WORK_DIR}:rw")
        if launch.flow.entrypoint:
            import puppemon

            argv[0] = spec.python
            volumes.append(f"{os.path.dirname(puppemon.__file__)}:{API}/puppemon:ro")
            env["PYTHONPATH"] = ":".join(filter(None, [API, launch.flow.env.get("PYTHONPATH")]))
        mounts = self._mounts(spec)
        if spec.user and os.geteuid() == 0:   # a rootful engine: the container's UID is this machine's
            _hand_over(area, spec.user)
        env_file, through_client = _env_file(env, area)   # in the area: crash recovery removes it with the rest
        argv = [engine.program, "run", *engine.run_args, "--name", name, "--label", f"{RUN_LABEL}={launch.run_id}",
                *(["--init"] if engine.init else []), *(["--rm"] if not spec.memory else []), "--pull", "never",
                "-w", WORK_DIR, "--env-file", env_file, *(a for n in through_client for a in ("-e", n)),
                *_limits(spec, engine), *(a for v in volumes + mounts for a in ("-v", v)),
                spec.image, *argv]
        client_env = {**os.environ, **{n: env[n] for n in through_client}}
        tail = bytearray()

        def out(data: bytes) -> None:
            tail.extend(data)
            del tail[:-TAIL]
            output(data)

        try:
            inner = LocalBackend().start(replace(launch, argv=argv, cwd=area, env=client_env, user=None), out)
        except Exception:
            Path(env_file).unlink(missing_ok=True)
            raise
        return ContainerExecution(engine, name, inner, launch.grace, spec.memory, env_file, tail)

    def recover(self, handle: dict) -> str | None:
        """Stop the engine client a crashed daemon left, and remove the run's containers (by its label)."""
        stopped = LocalBackend().recover(handle) if handle.get("pid") else None
        run_id = handle.get("run_id")
        if not run_id:
            return stopped
        engine = Engine(handle["engine"], handle.get("engine_kind", "podman")) if handle.get("engine") \
            else self.engine()
        names = engine.of_run(run_id)
        engine.remove(*names)
        removed = f"its container{'s' if len(names) > 1 else ''} {', '.join(names)} removed" if names else None
        return "; ".join(filter(None, [stopped, removed])) or None


def _inside(value: str, area: Path) -> str:
    """`value` with the area's host path replaced by where it is mounted in the container."""
    base = str(area)
    if value == base or value.startswith(base + "/"):
        return INSIDE + value[len(base):]
    return value


def _limits(spec, engine: Engine) -> list[str]:
    args = []
    if spec.memory:
        args += ["--memory", f"{spec.memory // 1024}k"]
    if spec.cpus:
        args += ["--cpus", f"{spec.cpus:g}"]
    network = spec.network or engine.network
    if network:
        args += ["--network", network]
    if spec.user:
        args += ["--user", spec.user]
    return args


def _env_file(env: dict[str, str], area: Path) -> tuple[str, list[str]]:
    """An env file of `env` in `area`, readable by this user only; the names whose values it cannot hold
    (a newline)."""
    fd, path = tempfile.mkstemp(prefix=".env-", dir=area)   # mode 0600
    through_client = sorted(k for k, v in env.items() if "\n" in v or "\r" in v or "\0" in v)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as fh:
        for key, value in env.items():
            if key not in through_client:
                fh.write(f"{key}={value}\n")
    return path, through_client


def _hand_over(area: Path, user: str) -> None:
    """Give the area to the container's user (UID[:GID]), so that it can write its work copy and outputs."""
    uid, _, gid = user.partition(":")
    uid_n, gid_n = int(uid), int(gid or uid)
    for directory, dirs, files in os.walk(area):
        for path in [directory, *(os.path.join(directory, n) for n in (*dirs, *files))]:
            os.lchown(path, uid_n, gid_n)
