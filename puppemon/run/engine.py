"""The container engine on this server (podman or docker) and what the server's config says of it.

Everything here is server configuration (the daemon's config file and options,
never the flows branch): which engine, the flags every `run` gets (on some
machines `--runtime runc` or lowered `--ulimit`s), which host paths a flow may
mount, and the default network.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from puppemon.errors import PuppemonError

ENGINES = ("podman", "docker")
CALL_TIMEOUT = 60.0      # an engine command that is not a build or a pull
RUN_LABEL = "io.puppemon.run"   # every container of a run carries its run id under this label
# Where podman finds the init (catatonit) that `--init` runs as PID 1: it passes SIGTERM on to the flow,
# which as PID 1 itself would not die of it. Docker ships its own (docker-init).
PODMAN_INITS = ("/usr/libexec/podman/catatonit", "/usr/bin/catatonit", "/usr/local/libexec/podman/catatonit",
                "/usr/lib/podman/catatonit")


class EngineError(PuppemonError):
    """The engine is missing, or one of its commands failed (the message says what to do)."""


@dataclass(frozen=True)
class EngineConfig:
    """`container_engine`, `container_args`, `container_build_args`, `container_mount_roots` and
    `container_network` of the server."""

    engine: str | None = None               # podman | docker | a path to one; None: the first found
    args: tuple[str, ...] = ()              # placed right after `run`
    build_args: tuple[str, ...] = ()        # placed right after `build`
    mount_roots: tuple[str, ...] = ()       # host directories under which flows may mount paths
    network: str | None = None              # for flows that do not say (None: the engine's default)

    def find(self) -> Engine:
        """The engine to use; EngineError saying how to get one when there is none."""
        wanted = [self.engine] if self.engine else list(ENGINES)
        for name in wanted:
            program = name if os.path.isabs(name) and os.access(name, os.X_OK) else shutil.which(name)
            if program:
                kind = "docker" if "docker" in os.path.basename(name) else "podman"
                init = kind == "docker" or any(os.path.exists(p) for p in PODMAN_INITS)
                return Engine(program, kind, self.args, self.network, init)
        if self.engine:
            raise EngineError(f"container engine {self.engine!r} is not installed on this server "
                              f"(install it, or set container_engine to podman or docker)")
        raise EngineError("no container engine on this server: install podman (apt install podman) or docker, "
                          "or run this flow without container:")

    def mount_refusal(self, host: str) -> str | None:
        """Why a flow may not mount `host` here (None when it may)."""
        from puppemon.formats import is_within

        real = os.path.realpath(host)
        if any(is_within(real, os.path.realpath(root)) for root in self.mount_roots):
            return None
        allowed = ", ".join(self.mount_roots) if self.mount_roots else "none are allowed"
        return (f"mounts {host}, which is outside the host paths this server lets flows mount ({allowed}; "
                f"add a parent directory to container_mount_roots in the daemon's config)")


@dataclass(frozen=True)
class Engine:
    program: str
    kind: str                     # podman | docker
    run_args: tuple[str, ...] = ()
    network: str | None = None
    init: bool = True             # whether `run --init` works (an init passes signals on to the flow)

    def call(self, *args: str, timeout: float = CALL_TIMEOUT, check: bool = True) -> subprocess.CompletedProcess:
        """Run `ENGINE ARGS`; EngineError with the engine's own last line when it fails and `check`."""
        try:
            proc = subprocess.run([self.program, *args], capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise EngineError(f"`{self.kind} {args[0]}` did not finish within {timeout:g}s") from None
        except OSError as exc:
            raise EngineError(f"cannot run {self.program}: {exc.strerror or exc}") from None
        if check and proc.returncode != 0:
            raise EngineError(f"`{self.kind} {' '.join(args[:2])}` failed: {last_line(proc.stderr or proc.stdout)}")
        return proc

    def has_image(self, image: str) -> bool:
        """Whether the engine's storage holds `image` (`image inspect`: docker has no `image exists`)."""
        return self.call("image", "inspect", "--format", "{{.Id}}", image, check=False).returncode == 0

    def remove(self, *names: str) -> None:
        """Remove containers (stopped or not) by name or id; missing ones are no error."""
        if names:
            self.call("rm", "-f", *names, check=False)

    def of_run(self, run_id: str) -> list[str]:
        """The names of the containers, running or not, labelled with `run_id`."""
        proc = self.call("ps", "-a", "--filter", f"label={RUN_LABEL}={run_id}", "--format", "{{.Names}}",
                         check=False)
        return proc.stdout.split() if proc.returncode == 0 else []


def last_line(text: str) -> str:
    """The engine's own reason: its last `Error...` line (docker follows it with a usage hint), else its last."""
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    errors = [line for line in lines if line.lower().startswith(("error", "unknown flag"))]
    return (errors or lines or ["no output"])[-1][:500]
