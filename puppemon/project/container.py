"""`container:` in the manifest: the image a flow runs in, and its limits.

Forms (in `defaults` or per flow; a flow's `container:` replaces the default's whole)::

    container: {image: localhost/tools:1}                 # an image the server has (or pulls: `pull:`)
    container:
      build: docker/Containerfile                         # built at deploy time; context: its directory
      memory: 512m                                        # --memory: b, k, m or g
      cpus: 1.5                                           # --cpus
      network: none                                       # none | bridge | host (default: the server's)
      user: "1000:1000"                                   # UID[:GID] inside the container
      mounts: ["/srv/inbox:/inbox:ro"]                    # HOST:CONTAINER[:ro|rw], HOST under the server's
                                                          #   container_mount_roots
      pull: missing                                       # never | missing | always (image: only)
      python: /usr/bin/python3                            # the image's Python, for entrypoint flows

What the server allows (the engine, its flags, which host paths may be mounted)
is the daemon's configuration (run/engine.py), never this file's.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from puppemon.formats import show
from puppemon.project.schema import Invalid, choice, is_null, kind_of, list_of, record, scalar, string

MEMORY_RE = re.compile(r"(?i)(\d+(?:\.\d+)?)\s*([bkmg]?)b?\Z")
USER_RE = re.compile(r"\d{1,10}(?::\d{1,10})?\Z")
IMAGE_RE = re.compile(r"[a-z0-9][a-z0-9._/:@-]{0,254}\Z")
MIN_MEMORY = 6 * 1024**2     # podman and docker refuse less than 6 MiB
WORK_DIR = "/puppemon/work"  # where the run's copy of the code is mounted, and its working directory


@dataclass(frozen=True)
class Mount:
    host: str
    target: str
    read_only: bool = True

    def option(self) -> str:
        return f"{self.host}:{self.target}:{'ro' if self.read_only else 'rw'}"


@dataclass(frozen=True)
class Container:
    """Where a flow's runs execute: an image (or a Containerfile to build one) and its limits."""

    image: str | None = None
    build: str | None = None            # the Containerfile, project-relative; its directory is the context
    memory: int | None = None           # bytes
    cpus: float | None = None
    network: str | None = None          # None: the server's default
    user: str | None = None
    mounts: tuple[Mount, ...] = ()
    pull: str = "missing"
    python: str = "python3"

    def describe(self) -> str:
        return f"image {self.image}" if self.image else f"built from {self.build}"


def container_field(node: yaml.Node, path: str) -> Container | None:
    """The checker of `container:`; None for `container: null` (no container, even if defaults set one)."""
    if is_null(node):
        return None
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, path, f"expected a mapping (image or build, memory, cpus, network, user, mounts, "
                      f"pull, python), got {kind_of(node)}")
    values = record(node, path, _FIELDS)
    if "image" in values and "build" in values:
        raise Invalid(node, path, "has both image and build (use one: an image the server has, or a "
                      "Containerfile to build it from)")
    if "image" not in values and "build" not in values:
        raise Invalid(node, path, "needs an image (image: NAME) or a Containerfile (build: path/to/Containerfile)")
    if "build" in values and "pull" in values:
        raise Invalid(node, path, "pull: is for image:, not build: (a built image is never pulled)")
    return Container(**values)


def _image(node: yaml.Node, path: str) -> str:
    value = string(node, path).strip()
    if not IMAGE_RE.match(value):
        raise Invalid(node, path, f"{show(value)} is not an image name (use lowercase letters, digits and "
                      "._/:@-, e.g. localhost/tools:1 or docker.io/library/python:3.12-slim)")
    return value


def _relative(node: yaml.Node, path: str) -> str:
    value = string(node, path).strip()
    parts = value.split("/")
    if not value or value.startswith("/") or ".." in parts or value.endswith("/"):
        raise Invalid(node, path, f"{show(value)} is not a file inside the project (use a relative path to "
                      "the Containerfile, e.g. docker/Containerfile)")
    return "/".join(p for p in parts if p not in ("", "."))


def parse_memory(value) -> int:
    """Bytes from `512m`, `1g`, `1048576` (ValueError when it is none of these)."""
    match = MEMORY_RE.match(str(value).strip()) if not isinstance(value, bool) else None
    if not match:
        raise ValueError(f"{show(value)} is not an amount of memory (use a number with b, k, m or g: 512m, 2g)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[unit])


def _memory(node: yaml.Node, path: str) -> int:
    try:
        amount = parse_memory(scalar(node, path))
    except ValueError as exc:
        raise Invalid(node, path, str(exc)) from None
    if amount < MIN_MEMORY:
        raise Invalid(node, path, f"{show(node.value)} is too little (a container needs at least 6m)")
    return amount


def _cpus(node: yaml.Node, path: str) -> float:
    value = scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1024:
        raise Invalid(node, path, f"{show(value)} is not a number of CPUs (use a number above 0, e.g. 1.5)")
    return float(value)


def _user(node: yaml.Node, path: str) -> str:
    value = scalar(node, path)
    if not isinstance(value, (str, int)) or isinstance(value, bool) or not USER_RE.match(str(value)):
        raise Invalid(node, path, f"{show(value)} is not a user inside the container (use UID or UID:GID, "
                      "quoted: \"1000:1000\")")
    return str(value)


def _mount(node: yaml.Node, path: str) -> Mount:
    value = string(node, path)
    parts = value.split(":")
    mode = parts.pop() if len(parts) == 3 else "ro"
    if len(parts) != 2 or mode not in ("ro", "rw") or not all(p.startswith("/") for p in parts) \
            or any(".." in p.split("/") for p in parts):
        raise Invalid(node, path, f"{show(value)} is not a mount (use HOST:CONTAINER or HOST:CONTAINER:ro|rw, "
                      "both absolute paths)")
    if parts[1].rstrip("/") in ("", "/puppemon") or parts[1].startswith("/puppemon/"):
        raise Invalid(node, path, f"{show(value)}: {parts[1]} is where puppemon mounts the run's own files "
                      "(choose another path in the container)")
    return Mount(parts[0].rstrip("/") or "/", parts[1].rstrip("/"), mode == "ro")


def _python(node: yaml.Node, path: str) -> str:
    value = string(node, path).strip()
    if not value or any(c.isspace() for c in value):
        raise Invalid(node, path, f"{show(value)} is not a program (name the image's Python: python3 or "
                      "/usr/bin/python3)")
    return value


_FIELDS = {
    "image": _image,
    "build": _relative,
    "memory": _memory,
    "cpus": _cpus,
    "network": choice("none", "bridge", "host"),
    "user": _user,
    "mounts": list_of(_mount),
    "pull": choice("never", "missing", "always"),
    "python": _python,
}
