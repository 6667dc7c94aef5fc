"""A container image for the tests, made locally (no registry): busybox-static, with the host's Python mounted
read-only for entrypoint flows; and the engine flags this kind of machine needs, as a server's config gives them."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.conftest import unavailable

IMAGE = "localhost/puppemon-test-busybox:1"
APPLETS = ("sh", "true", "false", "echo", "cat", "sleep", "env", "ls", "id", "head", "tr", "touch", "rm",
           "mkdir", "test", "[", "printf", "wc", "grep", "dd", "seq", "kill", "ps")


def engine_args() -> list[str]:
    """Flags every `run` gets on this machine: runc (crun refuses hybrid cgroups) and ulimits the sandbox
    can set (it lacks CAP_SYS_RESOURCE)."""
    args = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    return (["--runtime", "runc"] if shutil.which("runc") else []) + args


def python_mounts() -> list[str]:
    """-v flags that make this Python (and what it links against) run inside the busybox image."""
    prefix = os.path.realpath(sys.base_prefix)
    paths = ["/usr", "/lib", "/lib64", prefix]
    flags = []
    for path in dict.fromkeys(paths):
        if os.path.exists(path) and not (path != "/usr" and path.startswith("/usr/")):
            flags += ["-v", f"{path}:{path}:ro"]
    return flags


def python() -> str:
    """This Python's interpreter, as the container sees it (the same path, mounted)."""
    return os.path.realpath(sys._base_executable if hasattr(sys, "_base_executable") else sys.executable)


def rootfs_tar() -> bytes:
    """A root filesystem: busybox and its applets, /etc/passwd, the directories a run needs."""
    busybox = shutil.which("busybox") or "/bin/busybox"
    if not os.path.exists(busybox):
        unavailable("busybox is not installed (apt install busybox-static)")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        def add(name: str, kind=tarfile.DIRTYPE, data: bytes = b"", link: str = "", mode: int = 0o755) -> None:
            info = tarfile.TarInfo(name)
            info.type, info.mode, info.linkname, info.size = kind, mode, link, len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        for d in ("bin", "etc", "tmp", "root", "proc", "sys", "dev"):
            add(d, mode=0o1777 if d == "tmp" else 0o755)
        tar.add(busybox, "bin/busybox")
        for applet in APPLETS:
            add(f"bin/{applet}", tarfile.SYMTYPE, link="busybox")
        add("etc/passwd", tarfile.REGTYPE, b"root:x:0:0:root:/root:/bin/sh\nflow:x:1000:1000::/tmp:/bin/sh\n", mode=0o644)
        add("etc/group", tarfile.REGTYPE, b"root:x:0:\nflow:x:1000:\n", mode=0o644)
    return out.getvalue()


def make_image(engine: str = "podman", user_cmd: list[str] | None = None, env: dict | None = None) -> None:
    """Import IMAGE into the engine's storage (as `user_cmd`'s user when given), then check that a container
    runs at all here; the tests are unavailable (with the engine's reason) when one cannot."""
    prefix = user_cmd or []
    if not shutil.which(engine):
        unavailable(f"{engine} is not installed (apt install podman runc busybox-static)")
    env = {**os.environ, **(env or {})}
    imported = subprocess.run([*prefix, engine, "import", "-", IMAGE], input=rootfs_tar(), capture_output=True,
                              timeout=120, cwd="/", env=env)
    if imported.returncode != 0:   # installed, but its storage cannot work on this machine (inside a container)
        pytest.skip(f"{engine} cannot import an image on this machine: "
                    f"{imported.stderr.decode(errors='replace').strip()[-300:]}")
    probe = subprocess.run([*prefix, engine, "run", "--rm", *engine_args(), "--network", "none", IMAGE, "true"],
                           capture_output=True, text=True, timeout=120, cwd="/", env=env)
    if probe.returncode != 0:   # installed, but this machine cannot run containers (say, inside one itself)
        pytest.skip(f"{engine} cannot run a container on this machine: {probe.stderr.strip()[-300:]}")


def containers_of(run_id: str, engine: str = "podman", env: dict | None = None) -> list[str]:
    proc = subprocess.run([engine, "ps", "-a", "--filter", f"label=io.puppemon.run={run_id}", "--format",
                           "{{.Names}} {{.Status}}"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, **(env or {})})
    return [line for line in proc.stdout.splitlines() if line.strip()]


def daemon_config(path: Path, *, mount_roots: list[str] = (), extra: str = "", with_python: bool = True,
                  build_args: list[str] | None = None) -> Path:
    """A daemon config file with this machine's engine flags (and the host Python mounted)."""
    import json

    args = engine_args() + (python_mounts() if with_python else [])
    build = engine_args() if build_args is None else build_args
    path.write_text(f"container_args: {json.dumps(args)}\ncontainer_build_args: {json.dumps(build)}\n"
                    f"container_mount_roots: {json.dumps(list(mount_roots))}\n{extra}")
    return path


def start_dockerd(root: Path):
    """A Docker daemon of the tests' own, in `root` (data, exec root, socket, pid file), with no bridge or
    iptables rules; (the Popen, the environment that points docker at it). Unavailable where dockerd is not
    installed; skipped, saying why, where it is but cannot run here."""
    import time

    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if os.path.exists("/usr/sbin/dockerd") else None)
    if dockerd is None or not shutil.which("docker"):
        unavailable("docker is not installed (apt install docker.io)")
    if os.geteuid() != 0:
        pytest.skip("the tests' own Docker daemon needs root")
    sock = root / "docker.sock"
    log = open(root / "dockerd.log", "wb")
    proc = subprocess.Popen([dockerd, "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
                             "--pidfile", str(root / "dockerd.pid"), "--host", f"unix://{sock}", "--iptables=false",
                             "--ip6tables=false", "--bridge=none"], stdout=log, stderr=subprocess.STDOUT)
    env = {"DOCKER_HOST": f"unix://{sock}"}
    deadline = time.monotonic() + 60
    while subprocess.run(["docker", "info"], env={**os.environ, **env}, capture_output=True).returncode != 0:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_dockerd(proc)
            pytest.skip(f"dockerd cannot run on this machine: {(root / 'dockerd.log').read_text()[-300:]}")
        time.sleep(0.2)
    return proc, env


def stop_dockerd(proc) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
