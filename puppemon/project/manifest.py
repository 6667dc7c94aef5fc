"""puppemon.yaml: the schema (as data), validation with file:line:col messages, and the Flow it yields.

The checkers come from schema.py; each trigger kind (triggers.py) adds its own key.
The same `parse` runs in `puppemon push`, `puppemon validate` and the daemon.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from puppemon.errors import PuppemonError
from puppemon.formats import FLOW_NAME_RE, STATUSES, show
from puppemon.project import chains, triggers
from puppemon.project.schema import (Checker, Invalid, choice, count, duration, env_map, is_null, items,
                                     kind_of, list_of, named, params, positive_count, record, scalar,
                                     secret_name, string, timezone_name, unknown)
from puppemon.project.container import Container, container_field
from puppemon.project.slurm import Slurm, slurm_field
from puppemon.project.python import PythonEnv, python_field
from puppemon.project.root import MANIFEST_NAME
from puppemon.project.triggers import KINDS, Trigger

SCHEMA_VERSION = 1
USER_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}\Z")
ENTRYPOINT_RE = re.compile(
    r"(?:(?!/)(?:[^/:\s]+/)*[^/:\s]+\.py"                        # path/to/file.py
    r"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"    # package.module
    r":[A-Za-z_][A-Za-z0-9_]*\Z")


class ManifestError(PuppemonError):
    """puppemon.yaml is missing or invalid; the message names file:line:col and the key path."""


@dataclass(frozen=True)
class Notify:
    on: tuple[str, ...]
    webhook_secret: str


@dataclass(frozen=True)
class Flow:
    name: str
    entrypoint: str | None = None
    command: tuple[str, ...] | str | None = None
    triggers: tuple[Trigger, ...] = ()     # cron, interval, on deploy, ... (triggers.KINDS)
    timezone: str = "UTC"
    params: dict = field(default_factory=dict)
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 10.0
    overlap: str = "skip"
    concurrency: int | None = None         # at most this many runs in flight at once, across all daemons
    catchup: str = "latest"
    secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "fresh"
    notify: Notify | None = None
    user: str | None = None                # the OS user to run as: the server's config must grant it
    python: PythonEnv | None = None        # its Python environment (python.py); None: the daemon's interpreter
    runs_on: tuple[str, ...] = ()          # labels a daemon needs, every one, to take it (none: any daemon)
    container: Container | None = None     # runs in this image (container.py); None: a local process
    slurm: Slurm | None = None             # runs as Slurm jobs (slurm.py); None: not on Slurm
    line: int = 0
    # (line, column) of the flow's own values in the file, by key path: "entrypoint", "params.days"
    marks: dict[str, tuple[int, int]] = field(default_factory=dict, compare=False, repr=False)

    def trigger(self, kind: str) -> Trigger | None:
        """The flow's trigger of that kind (`cron`, `interval`, `deploy`), or None."""
        return next((t for t in self.triggers if t.kind == kind), None)


@dataclass(frozen=True)
class Manifest:
    version: int
    variables: dict[str, str]
    flows: dict[str, Flow]


# --- flow fields of their own ----------------------------------------------------------

def _entrypoint(node: yaml.Node, path: str) -> str:
    value = string(node, path)
    if not ENTRYPOINT_RE.match(value) or ".." in value.split(":")[0].split("/"):
        raise Invalid(node, path, f"{show(value)} is not an entrypoint "
                      "(use path/to/file.py:function or package.module:function)")
    return value


def _command(node: yaml.Node, path: str) -> tuple[str, ...] | str:
    if isinstance(node, yaml.SequenceNode):
        return list_of(_command_item, nonempty=True)(node, path)
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(node, path, f"expected a string or a list of strings, got {kind_of(node)}")
    value = string(node, path)
    if not value.strip():
        raise Invalid(node, path, "the command is empty (give a program to run)")
    return value


def _command_item(node: yaml.Node, path: str) -> str:
    value = scalar(node, path)
    if not isinstance(value, str):
        raise Invalid(node, path, f"{show(value)} is not a string (quote it: '{node.value}')")
    return value


def _notify(node: yaml.Node, path: str) -> Notify | None:
    if is_null(node):
        return None
    values = record(node, path, _NOTIFY_FIELDS)
    if "webhook_secret" not in values:
        raise Invalid(node, path, "webhook_secret is missing (name the secret that holds the webhook URL)")
    return Notify(on=values.get("on", ("failed", "timed_out", "crashed")), webhook_secret=values["webhook_secret"])


# --- the schema, as data ------------------------------------------------------------------

_NOTIFY_FIELDS: dict[str, Checker] = {
    "on": list_of(choice(*STATUSES), nonempty=True),
    "webhook_secret": secret_name,
}

FLOW_FIELDS: dict[str, Checker] = {
    "entrypoint": _entrypoint,
    "command": _command,
    "timezone": timezone_name,
    "params": params,
    "timeout": duration(positive=True, nullable=True),   # null = no limit, even if defaults set one
    "retries": count,
    "retry_delay": duration(),
    "overlap": choice("skip", "queue", "parallel"),
    "concurrency": positive_count,
    "catchup": choice("none", "latest", "all"),
    "secrets": list_of(secret_name),
    "env": env_map,
    "workdir": choice("fresh", "shared"),
    "notify": _notify,                                     # null = no notification
    "python": python_field,
    "container": container_field,                          # null = a local process, even if defaults set one
    "slurm": slurm_field,                                  # null = not on Slurm, even if defaults say so
    "user": named(USER_NAME_RE, "user name", "an OS user name: letters, digits, '_', '.' and '-'"),
    "runs_on": list_of(named(FLOW_NAME_RE, "label", "lowercase letters, digits, '-' and '_', as a daemon's "
                             "--labels")),
    **{kind.key: kind.check for kind in KINDS.values()},   # schedule, every, run_on_deploy, ...
}
DEFAULT_KEYS = ("timezone", "timeout", "retries", "retry_delay", "overlap", "catchup", "env", "notify", "workdir",
                "user", "python", "runs_on", "container", "slurm")
DEFAULT_FIELDS = {key: FLOW_FIELDS[key] for key in DEFAULT_KEYS}


def _flow(key_node: yaml.Node, name: str, node: yaml.Node, defaults: dict[str, Any]) -> Flow:
    path = f"flows.{name}"
    if not FLOW_NAME_RE.match(name) or len(name) > 100:
        raise Invalid(key_node, path, f"{name!r} is not a valid flow name (use lowercase letters, digits, "
                      "'-' and '_', starting with a letter or digit, at most 100 characters)")
    values = record(node, path, FLOW_FIELDS)
    own = items(node, path)
    keys = {key: key_node for key_node, key, _ in own}
    marks = {key: _mark(value_node) for _, key, value_node in own}
    for _, key, value_node in own:
        if key == "params" and isinstance(value_node, yaml.MappingNode):
            marks.update({f"params.{k}": _mark(k_node) for k_node, k, _ in items(value_node, path)})
    if "entrypoint" in values and "command" in values:
        later = max(keys["entrypoint"], keys["command"], key=lambda n: (n.start_mark.line, n.start_mark.column))
        raise Invalid(later, path, "has both entrypoint and command (use exactly one)")
    if "entrypoint" not in values and "command" not in values:
        raise Invalid(key_node, path, "needs an entrypoint (path/to/file.py:function) or a command")
    merged = dict(defaults)
    merged.update(values)
    if "env" in defaults and "env" in values:
        merged["env"] = {**defaults["env"], **values["env"]}
    if merged.get("user") and merged.get("workdir") == "shared":
        raise Invalid(keys.get("workdir") or keys.get("user") or key_node, path,
                      "has both user: and workdir: shared (a run as another user works in its own copy of "
                      "the code: drop workdir: shared)")
    _check_container(merged, keys, key_node, path)
    _check_slurm(merged, keys, key_node, path)
    trigger_list = triggers.build(merged, merged.get("timezone", "UTC"))
    return Flow(name=name, line=key_node.start_mark.line + 1, triggers=trigger_list, marks=marks, **merged)


def _check_container(merged: dict, keys: dict, key_node: yaml.Node, path: str) -> None:
    """A container flow takes its Python and its user from its image, and works in its own copy (DESIGN.md)."""
    if not merged.get("container"):
        return
    for key, why in (("python", "a container flow takes its dependencies from its image: drop python:, or "
                      "name the image's interpreter as container.python"),
                     ("user", "a container flow runs as the image's user: set container.user (UID[:GID]) instead"),
                     ("workdir", "a container run works in its own copy of the code: drop workdir: shared")):
        if merged.get(key) and (key != "workdir" or merged[key] == "shared"):
            where = keys.get(key) or keys.get("container") or key_node
            raise Invalid(where, f"{path}.{key}", f"cannot be used with container: ({why})")


def _check_slurm(merged: dict, keys: dict, key_node: yaml.Node, path: str) -> None:
    """A Slurm flow runs as the daemon's user in its own copy on the shared directory, outside any container."""
    if merged.get("slurm") is None:
        return
    for key, why in (("container", "a flow runs in a container or as a Slurm job, not both: drop one"),
                     ("user", "a Slurm job runs as the daemon's user: drop user:"),
                     ("workdir", "a Slurm job works in its own copy of the code on the shared directory: "
                      "drop workdir: shared")):
        if merged.get(key) and (key != "workdir" or merged[key] == "shared"):
            where = keys.get(key) or keys.get("slurm") or key_node
            raise Invalid(where, f"{path}.{key}", f"cannot be used with slurm: ({why})")


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _variables(node: yaml.Node, path: str) -> dict[str, str]:
    return env_map(node, path)


def _manifest(root: yaml.Node | None) -> Manifest:
    if root is None:
        raise Invalid(None, "", f"the file is empty (start with `version: {SCHEMA_VERSION}` and a `flows:` mapping)")
    if not isinstance(root, yaml.MappingNode):
        raise Invalid(root, "", f"expected a mapping with version and flows at the top level, got {kind_of(root)}")
    top = items(root, "")
    found = {key: (key_node, value_node) for key_node, key, value_node in top}
    if "version" not in found:
        raise Invalid(root, "version", f"missing (add `version: {SCHEMA_VERSION}` at the top)")
    version_node = found["version"][1]
    version = scalar(version_node, "version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise Invalid(version_node, "version", f"{show(version)} is not supported "
                      f"(this puppemon reads version {SCHEMA_VERSION})")
    sections = {"version": None, "defaults": None, "variables": None, "flows": None}
    for key_node, key, _ in top:
        if key not in sections:
            raise unknown(key_node, "", key, sections)
    defaults = record(found["defaults"][1], "defaults", DEFAULT_FIELDS) if "defaults" in found else {}
    variables = _variables(found["variables"][1], "variables") if "variables" in found else {}
    if "flows" not in found:
        raise Invalid(root, "flows", "missing (add a `flows:` mapping of flow names to flows)")
    flows = {}
    for key_node, name, node in items(found["flows"][1], "flows"):
        flows[name] = _flow(key_node, name, node, defaults)
    chains.check(flows)   # after: names flows of this manifest, and makes no cycle
    return Manifest(version=version, variables=variables, flows=flows)


_SURROGATE = re.compile("[\ud800-\udfff]")
MAX_BYTES = 1024 * 1024  # configuration, not data: a bigger file would hold the daemon's loop for seconds


def check_size(size: int, filename: str = MANIFEST_NAME) -> None:
    """Refuse a manifest of `size` bytes when it is larger than MAX_BYTES (ask before reading it)."""
    if size > MAX_BYTES:
        raise ManifestError(f"{filename}: {size} bytes, more than the {MAX_BYTES} (1 MiB) a manifest may "
                            "hold (keep data in files of the project and read them from the flow)")


def _compose(loader: yaml.SafeLoader) -> yaml.Node | None:
    """The document's nodes; an escape that is no character is a ScannerError at the escape."""
    try:
        root = loader.get_single_node()
    except (ValueError, OverflowError):
        # PyYAML's scanner calls chr() on "\U00200000" or "\UFFFFFFFF" unchecked; it stands after the "\U"
        mark = loader.get_mark()
        mark = yaml.Mark(mark.name, mark.index - 2, mark.line, max(mark.column - 2, 0), None, None)
        raise yaml.scanner.ScannerError(problem=f"the escape \\U{loader.prefix(8)} is not a Unicode character "
                                        "(the largest is \\U0010FFFF)", problem_mark=mark) from None
    stack, seen = [root], set()
    while stack:  # a lone surrogate ("\uD800") is no character either, and no file can hold it as UTF-8
        node = stack.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.ScalarNode):
            half = _SURROGATE.search(node.value)
            if half:
                raise yaml.scanner.ScannerError(problem=f"U+{ord(half.group()):04X} is half of a UTF-16 surrogate pair, "
                                                "not a character (write the character itself, or \\U and "
                                                "its code point)", problem_mark=node.start_mark)
        else:
            stack.extend(n for item in node.value for n in (item if isinstance(item, tuple) else (item,)))
    return root


def _decode(data: bytes, filename: str) -> str:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16")
        except UnicodeDecodeError:
            pass
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise ManifestError(f"{filename}:{line}:{col}: not valid UTF-8 (save the file as UTF-8)") from None


def parse(text: str | bytes, filename: str = MANIFEST_NAME) -> Manifest:
    """Validate the text of a puppemon.yaml; raises ManifestError only."""
    check_size(len(text) if isinstance(text, bytes) else len(text.encode("utf-8", "surrogatepass")), filename)
    if isinstance(text, bytes):
        text = _decode(text, filename)
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        return _manifest(_compose(loader))
    except Invalid as exc:
        line, col = (exc.mark.line + 1, exc.mark.column + 1) if exc.mark else (1, 1)
        where = f"{filename}:{line}:{col}"
        path = f" {exc.path}:" if exc.path else ""
        raise ManifestError(f"{where}:{path} {exc.what}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{filename}:{mark.line + 1}:{mark.column + 1}" if mark else filename
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.problem and exc.context and exc.context.startswith("expected"):
            problem = f"{exc.context}, {exc.problem}"
        raise ManifestError(f"{where}: invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        char = f"U+{exc.character:04X}" if isinstance(exc.character, int) else repr(exc.character)
        raise ManifestError(f"{filename}:{line}:{col}: invalid YAML: character {char} "
                            "is not allowed (remove it)") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{filename}:1:1: invalid YAML: {exc}") from None
    except RecursionError:
        raise ManifestError(f"{filename}:1:1: invalid YAML: nested too deeply") from None
    finally:
        if loader is not None:
            loader.dispose()


def read(directory) -> bytes:
    """The bytes of DIRECTORY/puppemon.yaml (a ManifestError when it is missing, unreadable or too big)."""
    path = Path(directory) / MANIFEST_NAME
    try:
        with path.open("rb") as fh:
            check_size(os.fstat(fh.fileno()).st_size)   # before reading it: a 50 MB file is refused at once
            return fh.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {os.fspath(directory)}; "
                            "run `puppemon init` to create one") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None


def load(directory) -> Manifest:
    """Read and validate DIRECTORY/puppemon.yaml."""
    return parse(read(directory), MANIFEST_NAME)

