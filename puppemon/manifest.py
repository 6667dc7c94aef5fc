"""puppemon.yaml: the schema (as data), validation with file:line:col messages, and durations."""
from __future__ import annotations

import difflib
import math
import os
import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from puppemon.errors import PuppemonError

MANIFEST_NAME = "puppemon.yaml"
SCHEMA_VERSION = 1
STATUSES = ("succeeded", "failed", "timed_out", "cancelled", "crashed", "skipped")

FLOW_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]*\Z")
SECRET_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\Z")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
ENTRYPOINT_RE = re.compile(
    r"(?:(?!/)(?:[^/:\s]+/)*[^/:\s]+\.py"                        # path/to/file.py
    r"|[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)"    # package.module
    r":[A-Za-z_][A-Za-z0-9_]*\Z")
_DURATION_RE = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s)?\Z", re.ASCII)
_SECONDS_RE = re.compile(r"\d+(?:\.\d+)?\Z", re.ASCII)
DURATION_HINT = "use 30s, 10m, 2h, 1d"
_MAX_DURATION = 3650 * 86400
_MAX_VALUE_NODES = 100_000   # params expanded through YAML aliases ("billion laughs") stop here


class ManifestError(PuppemonError):
    """puppemon.yaml is missing or invalid; the message names file:line:col and the key path."""


class DurationError(PuppemonError, ValueError):
    """A text that is not a duration such as 30s, 10m, 2h, 1d."""


@dataclass(frozen=True)
class Notify:
    on: tuple[str, ...]
    webhook_secret: str


@dataclass(frozen=True)
class Flow:
    name: str
    entrypoint: str | None = None
    command: tuple[str, ...] | str | None = None
    schedules: tuple[str, ...] = ()
    every: float | None = None
    timezone: str = "UTC"
    params: dict = field(default_factory=dict)
    timeout: float | None = None
    retries: int = 0
    retry_delay: float = 10.0
    overlap: str = "skip"
    catchup: str = "latest"
    secrets: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    run_on_deploy: bool = False
    workdir: str = "fresh"
    notify: Notify | None = None
    line: int = 0


@dataclass(frozen=True)
class Manifest:
    version: int
    variables: dict[str, str]
    flows: dict[str, Flow]


# --- durations --------------------------------------------------------------------------

def parse_duration(text) -> float:
    """Seconds in "30s", "10m", "2h", "1d", "1h30m" or a number of seconds; DurationError otherwise."""
    if isinstance(text, bool) or text is None:
        raise DurationError(f"{_show(text)} is not a duration ({DURATION_HINT})")
    if isinstance(text, (int, float)):
        if isinstance(text, int) and abs(text) > 10**15:
            raise DurationError(f"{_show(text)} is not a duration ({DURATION_HINT})")
        if not math.isfinite(text) or text < 0:
            raise DurationError(f"{_show(text)} is not a duration ({DURATION_HINT})")
        return float(text)
    compact = "".join(text.split()) if isinstance(text, str) else ""
    if _SECONDS_RE.match(compact):
        return float(compact)
    match = _DURATION_RE.match(compact)
    if not compact or not match:
        raise DurationError(f"{_show(text)} is not a duration ({DURATION_HINT})")
    days, hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return days * 86400 + hours * 3600 + minutes * 60 + seconds


def format_duration(seconds: float) -> str:
    """A duration for humans: "1.2s", "3m 04s", "2h 05m", "3d 04h"."""
    if seconds < 59.95:
        return f"{max(seconds, 0.0):.1f}s"
    total = int(round(seconds))
    if total < 3600:
        return f"{total // 60}m {total % 60:02d}s"
    if total < 86400:
        return f"{total // 3600}h {total % 3600 // 60:02d}m"
    return f"{total // 86400}d {total % 86400 // 3600:02d}h"


# --- reading YAML nodes -----------------------------------------------------------------

class _Invalid(Exception):
    """Raised inside the validator; parse() turns it into a ManifestError with the file name."""

    def __init__(self, node: yaml.Node | None, path: str, what: str) -> None:
        super().__init__(what)
        self.mark = node.start_mark if node is not None else None
        self.path, self.what = path, what


_KINDS = {"tag:yaml.org,2002:str": "a string", "tag:yaml.org,2002:int": "a number",
          "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:bool": "a boolean",
          "tag:yaml.org,2002:null": "null", "tag:yaml.org,2002:timestamp": "a date",
          "tag:yaml.org,2002:binary": "binary data"}


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = repr(value)
    return text if len(text) <= 60 else text[:56] + ("...'" if isinstance(value, str) else "...")


def _kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _KINDS.get(node.tag, f"a value tagged {node.tag}")


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _scalar(node: yaml.Node, path: str) -> Any:
    """The Python value of a scalar node (str, int, float, bool, None), or _Invalid."""
    if not isinstance(node, yaml.ScalarNode):
        raise _Invalid(node, path, f"expected a single value, got {_kind(node)}")
    if node.tag not in _KINDS or node.tag == "tag:yaml.org,2002:binary":
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise _Invalid(node, path, f"YAML tag {tag} is not supported here (remove the tag)")
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # PyYAML resolves "2024-13-45" as a date and then fails to build it
        raise _Invalid(node, path, f"{node.value!r} is not a valid {_kind(node)[2:]} (quote it to make it a string)") from exc
    if node.tag == "tag:yaml.org,2002:timestamp":
        raise _Invalid(node, path, f"{node.value!r} is a date (quote it to make it a string)")
    return value


def _key(node: yaml.Node, path: str) -> str:
    # Keys are taken as written: `on:` and `1:` are the strings "on" and "1", not YAML 1.1 bools/ints.
    if not isinstance(node, yaml.ScalarNode):
        raise _Invalid(node, path, f"keys must be strings, got {_kind(node)}")
    return node.value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _items(node: yaml.Node, path: str, _seen: frozenset = frozenset()) -> list[tuple[yaml.Node, str, yaml.Node]]:
    """(key node, key, value node) of a mapping, in file order; duplicates refused, `<<` merges applied."""
    if _is_null(node):
        return []
    if not isinstance(node, yaml.MappingNode):
        raise _Invalid(node, path, f"expected a mapping, got {_kind(node)}")
    if id(node) in _seen:
        raise _Invalid(node, path, "a YAML merge (<<) refers to itself")
    own: dict[str, tuple[yaml.Node, str, yaml.Node]] = {}
    merged: list[tuple[yaml.Node, str, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise _Invalid(source, path, f"a YAML merge (<<) needs a mapping, got {_kind(source)}")
                merged.extend(_items(source, path, _seen | {id(node)}))
            continue
        key = _key(key_node, path)
        if key in own:
            first = own[key][0].start_mark.line + 1
            raise _Invalid(key_node, _join(path, key), f"duplicate key (already defined on line {first})")
        own[key] = (key_node, key, value_node)
    result: dict[str, tuple[yaml.Node, str, yaml.Node]] = {}
    for item in merged:                      # the first merged mapping wins, as in YAML's merge spec
        result.setdefault(item[1], item)
    result.update(own)                       # explicit keys override merged ones
    return list(result.values())


def _unknown(key_node: yaml.Node, path: str, key: str, allowed) -> _Invalid:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(allowed))
    return _Invalid(key_node, _join(path, key), f"unknown key ({hint})")


# --- checkers: each takes (node, path) and returns the Python value or raises _Invalid -----

Checker = Callable[[yaml.Node, str], Any]


def _string(node: yaml.Node, path: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise _Invalid(node, path, f"expected a string, got {_kind(node)}")
    value = _scalar(node, path)
    if not isinstance(value, str):
        raise _Invalid(node, path, f"expected a string, got {_kind(node)} {_show(value)}")
    return value


def _choice(*options: str) -> Checker:
    def check(node: yaml.Node, path: str) -> str:
        value = _scalar(node, path)
        if value not in options:
            raise _Invalid(node, path, f"{_show(value)} is not allowed (use {' | '.join(options)})")
        return value
    return check


def _duration(minimum: float = 0.0, positive: bool = False, nullable: bool = False) -> Checker:
    def check(node: yaml.Node, path: str) -> float | None:
        value = _scalar(node, path)
        if value is None and nullable:
            return None
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise _Invalid(node, path, str(exc)) from None
        if seconds < minimum or (positive and seconds <= 0):
            least = f"at least {minimum:g}s" if minimum else "more than 0s"
            raise _Invalid(node, path, f"{_show(value)} is too short (use {least})")
        if seconds > _MAX_DURATION:
            raise _Invalid(node, path, f"{_show(value)} is too long (use at most 3650d)")
        return seconds
    return check


def _count(node: yaml.Node, path: str) -> int:
    value = _scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _Invalid(node, path, f"{_show(value)} is not a count (use a whole number, 0 or more)")
    return value


def _bool(node: yaml.Node, path: str) -> bool:
    value = _scalar(node, path)
    if not isinstance(value, bool):
        raise _Invalid(node, path, f"{_show(value)} is not a boolean (use true or false)")
    return value


def _timezone(node: yaml.Node, path: str) -> str:
    name = _string(node, path)
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "use an IANA name such as UTC, Europe/Paris, Asia/Taipei"
    raise _Invalid(node, path, f"{_show(name)} is not a known timezone ({hint})")


def _named(regex: re.Pattern, what: str, allowed: str) -> Checker:
    def check(node: yaml.Node, path: str) -> str:
        value = _string(node, path)
        if not regex.match(value):
            raise _Invalid(node, path, f"{_show(value)} is not a valid {what} (use {allowed})")
        return value
    return check


_secret_name = _named(SECRET_NAME_RE, "secret name", "letters, digits, '_', '.' and '-'")


def _list_of(item: Checker, single_ok: bool = True, nonempty: bool = False) -> Checker:
    def check(node: yaml.Node, path: str) -> tuple:
        if isinstance(node, yaml.SequenceNode):
            if nonempty and not node.value:
                raise _Invalid(node, path, "the list is empty (give at least one item)")
            return tuple(item(child, f"{path}[{i}]") for i, child in enumerate(node.value))
        if single_ok and isinstance(node, yaml.ScalarNode) and not _is_null(node):
            return (item(node, path),)
        raise _Invalid(node, path, f"expected a list, got {_kind(node)}")
    return check


def _env_map(node: yaml.Node, path: str) -> dict[str, str]:
    """NAME: value pairs for the environment; values are taken as written (`1.10` stays "1.10")."""
    result = {}
    for key_node, key, value_node in _items(node, path):
        where = _join(path, key)
        if not ENV_NAME_RE.match(key):
            raise _Invalid(key_node, where, f"{key!r} is not an environment variable name "
                           "(use letters, digits and '_', not starting with a digit)")
        if key.upper().startswith("PUPPEMON_"):
            raise _Invalid(key_node, where, "names starting with PUPPEMON_ are reserved (choose another name)")
        value = _scalar(value_node, where)
        if value is None:
            raise _Invalid(value_node, where, "has no value (use '' for an empty string)")
        result[key] = value_node.value
    return result


def _json_value(node: yaml.Node, path: str, budget: list[int], stack: tuple = ()) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise _Invalid(node, path, "too large (YAML aliases expand to more than 100000 values)")
    if id(node) in stack:
        raise _Invalid(node, path, "a YAML alias refers to itself (params must be plain JSON values)")
    if isinstance(node, yaml.SequenceNode):
        return [_json_value(child, f"{path}[{i}]", budget, stack + (id(node),))
                for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        return {key: _json_value(value, _join(path, key), budget, stack + (id(node),))
                for _, key, value in _items(node, path)}
    value = _scalar(node, path)
    if isinstance(value, float) and not math.isfinite(value):
        raise _Invalid(node, path, f"{node.value!r} is not a JSON number (use a finite number)")
    return value


def _params(node: yaml.Node, path: str) -> dict:
    budget = [_MAX_VALUE_NODES]
    return {key: _json_value(value, _join(path, key), budget, (id(node),)) for _, key, value in _items(node, path)}


def _entrypoint(node: yaml.Node, path: str) -> str:
    value = _string(node, path)
    if not ENTRYPOINT_RE.match(value) or ".." in value.split(":")[0].split("/"):
        raise _Invalid(node, path, f"{_show(value)} is not an entrypoint "
                       "(use path/to/file.py:function or package.module:function)")
    return value


def _command(node: yaml.Node, path: str) -> tuple[str, ...] | str:
    if isinstance(node, yaml.SequenceNode):
        return _list_of(_command_item, nonempty=True)(node, path)
    if not isinstance(node, yaml.ScalarNode):
        raise _Invalid(node, path, f"expected a string or a list of strings, got {_kind(node)}")
    value = _string(node, path)
    if not value.strip():
        raise _Invalid(node, path, "the command is empty (give a program to run)")
    return value


def _command_item(node: yaml.Node, path: str) -> str:
    value = _scalar(node, path)
    if not isinstance(value, str):
        raise _Invalid(node, path, f"{_show(value)} is not a string (quote it: '{node.value}')")
    return value


def _schedule(node: yaml.Node, path: str) -> str:
    from puppemon.schedule import CronError, parse_cron
    text = _string(node, path)
    try:
        return parse_cron(text).expr
    except CronError as exc:
        raise _Invalid(node, path, str(exc)) from None


def _notify(node: yaml.Node, path: str) -> Notify | None:
    if _is_null(node):
        return None
    values = _record(node, path, _NOTIFY_FIELDS)
    if "webhook_secret" not in values:
        raise _Invalid(node, path, "webhook_secret is missing (name the secret that holds the webhook URL)")
    return Notify(on=values.get("on", ("failed", "timed_out", "crashed")), webhook_secret=values["webhook_secret"])


def _record(node: yaml.Node, path: str, fields: dict[str, Checker]) -> dict[str, Any]:
    """Check a mapping with a fixed set of keys; returns {key: checked value}."""
    values = {}
    for key_node, key, value_node in _items(node, path):
        if key not in fields:
            raise _unknown(key_node, path, key, fields)
        values[key] = fields[key](value_node, _join(path, key))
    return values


# --- the schema, as data ------------------------------------------------------------------

_NOTIFY_FIELDS: dict[str, Checker] = {
    "on": _list_of(_choice(*STATUSES), nonempty=True),
    "webhook_secret": _secret_name,
}

FLOW_FIELDS: dict[str, Checker] = {
    "entrypoint": _entrypoint,
    "command": _command,
    "schedule": _list_of(_schedule, nonempty=True),
    "every": _duration(minimum=1.0),
    "timezone": _timezone,
    "params": _params,
    "timeout": _duration(positive=True, nullable=True),   # null = no limit, even if defaults set one
    "retries": _count,
    "retry_delay": _duration(),
    "overlap": _choice("skip", "queue", "parallel"),
    "catchup": _choice("none", "latest", "all"),
    "secrets": _list_of(_secret_name),
    "env": _env_map,
    "run_on_deploy": _bool,
    "workdir": _choice("fresh", "shared"),
    "notify": _notify,                                     # null = no notification
}
DEFAULT_KEYS = ("timezone", "timeout", "retries", "retry_delay", "overlap", "catchup", "env", "notify", "workdir")
DEFAULT_FIELDS = {key: FLOW_FIELDS[key] for key in DEFAULT_KEYS}
_FLOW_ATTRS = {"schedule": "schedules"}                    # YAML key -> Flow attribute, where they differ


def _flow(key_node: yaml.Node, name: str, node: yaml.Node, defaults: dict[str, Any]) -> Flow:
    path = f"flows.{name}"
    if not FLOW_NAME_RE.match(name) or len(name) > 100:
        raise _Invalid(key_node, path, f"{name!r} is not a valid flow name (use lowercase letters, digits, "
                       "'-' and '_', starting with a letter or digit, at most 100 characters)")
    values = _record(node, path, FLOW_FIELDS)
    keys = {key: key_node for key_node, key, _ in _items(node, path)}
    if "entrypoint" in values and "command" in values:
        later = max(keys["entrypoint"], keys["command"], key=lambda n: (n.start_mark.line, n.start_mark.column))
        raise _Invalid(later, path, "has both entrypoint and command (use exactly one)")
    if "entrypoint" not in values and "command" not in values:
        raise _Invalid(key_node, path, "needs an entrypoint (path/to/file.py:function) or a command")
    merged = dict(defaults)
    merged.update(values)
    if "env" in defaults and "env" in values:
        merged["env"] = {**defaults["env"], **values["env"]}
    return Flow(name=name, line=key_node.start_mark.line + 1,
                **{_FLOW_ATTRS.get(key, key): value for key, value in merged.items()})


def _variables(node: yaml.Node, path: str) -> dict[str, str]:
    return _env_map(node, path)


def _manifest(root: yaml.Node | None) -> Manifest:
    if root is None:
        raise _Invalid(None, "", f"the file is empty (start with `version: {SCHEMA_VERSION}` and a `flows:` mapping)")
    if not isinstance(root, yaml.MappingNode):
        raise _Invalid(root, "", f"expected a mapping with version and flows at the top level, got {_kind(root)}")
    items = _items(root, "")
    found = {key: (key_node, value_node) for key_node, key, value_node in items}
    if "version" not in found:
        raise _Invalid(root, "version", f"missing (add `version: {SCHEMA_VERSION}` at the top)")
    version_node = found["version"][1]
    version = _scalar(version_node, "version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise _Invalid(version_node, "version", f"{_show(version)} is not supported "
                       f"(this puppemon reads version {SCHEMA_VERSION})")
    sections = {"version": None, "defaults": None, "variables": None, "flows": None}
    for key_node, key, _ in items:
        if key not in sections:
            raise _unknown(key_node, "", key, sections)
    defaults = _record(found["defaults"][1], "defaults", DEFAULT_FIELDS) if "defaults" in found else {}
    variables = _variables(found["variables"][1], "variables") if "variables" in found else {}
    if "flows" not in found:
        raise _Invalid(root, "flows", "missing (add a `flows:` mapping of flow names to flows)")
    flows = {}
    for key_node, name, node in _items(found["flows"][1], "flows"):
        flows[name] = _flow(key_node, name, node, defaults)
    return Manifest(version=version, variables=variables, flows=flows)


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
    if isinstance(text, bytes):
        text = _decode(text, filename)
    loader = None
    try:
        loader = yaml.SafeLoader(text)
        root = loader.get_single_node()
        return _manifest(root)
    except _Invalid as exc:
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


def load(directory) -> Manifest:
    """Read and validate DIRECTORY/puppemon.yaml."""
    path = Path(directory) / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_NAME} in {os.fspath(directory)}; "
                            "run `puppemon init` to create one") from None
    except OSError as exc:
        raise ManifestError(f"cannot read {path}: {exc.strerror}") from None
    return parse(data, MANIFEST_NAME)


def validate_for_push(directory) -> Manifest:
    """The manifest `puppemon push` deploys: the same checks as `puppemon validate` and the daemon."""
    return load(directory)
