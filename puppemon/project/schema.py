"""The vocabulary the manifest's schema is written in: YAML nodes read with their marks,
and checkers that turn a node into a value or raise Invalid (key path + what is allowed).

Each checker takes (node, path) and returns the Python value. Trigger kinds
(triggers.py) and the manifest (manifest.py) build their schemas from these.
"""
from __future__ import annotations

import difflib
import math
import re
import zoneinfo
from typing import Any, Callable

import yaml

from puppemon.formats import ENV_NAME_RE, SECRET_NAME_RE, DurationError, parse_duration, show

MAX_DURATION = 3650 * 86400
MAX_VALUE_NODES = 100_000   # params expanded through YAML aliases ("billion laughs") stop here


# --- reading YAML nodes -----------------------------------------------------------------

class Invalid(Exception):
    """Raised inside a checker; manifest.parse() turns it into a ManifestError with file:line:col."""

    def __init__(self, node: yaml.Node | None, path: str, what: str) -> None:
        super().__init__(what)
        self.mark = node.start_mark if node is not None else None
        self.path, self.what = path, what


_TAGS = {"tag:yaml.org,2002:str": "a string", "tag:yaml.org,2002:int": "a number",
         "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:bool": "a boolean",
         "tag:yaml.org,2002:null": "null", "tag:yaml.org,2002:timestamp": "a date",
         "tag:yaml.org,2002:binary": "binary data"}


def kind_of(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return _TAGS.get(node.tag, f"a value tagged {node.tag}")


def is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def scalar(node: yaml.Node, path: str) -> Any:
    """The Python value of a scalar node (str, int, float, bool, None), or Invalid."""
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(node, path, f"expected a single value, got {kind_of(node)}")
    if node.tag not in _TAGS or node.tag == "tag:yaml.org,2002:binary":
        tag = node.tag.replace("tag:yaml.org,2002:", "!!")
        raise Invalid(node, path, f"YAML tag {tag} is not supported here (remove the tag)")
    try:
        value = yaml.constructor.SafeConstructor().construct_object(node)
    except (yaml.YAMLError, ValueError, OverflowError) as exc:
        # PyYAML resolves "2024-13-45" as a date and then fails to build it
        raise Invalid(node, path, f"{node.value!r} is not a valid {kind_of(node)[2:]} (quote it to make it a string)") from exc
    if node.tag == "tag:yaml.org,2002:timestamp":
        raise Invalid(node, path, f"{node.value!r} is a date (quote it to make it a string)")
    return value


def _key(node: yaml.Node, path: str) -> str:
    # Keys are taken as written: `on:` and `1:` are the strings "on" and "1", not YAML 1.1 bools/ints.
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(node, path, f"keys must be strings, got {kind_of(node)}")
    return node.value


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def items(node: yaml.Node, path: str, _seen: frozenset = frozenset()) -> list[tuple[yaml.Node, str, yaml.Node]]:
    """(key node, key, value node) of a mapping, in file order; duplicates refused, `<<` merges applied."""
    if is_null(node):
        return []
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, path, f"expected a mapping, got {kind_of(node)}")
    if id(node) in _seen:
        raise Invalid(node, path, "a YAML merge (<<) refers to itself")
    own: dict[str, tuple[yaml.Node, str, yaml.Node]] = {}
    merged: list[tuple[yaml.Node, str, yaml.Node]] = []
    for key_node, value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise Invalid(source, path, f"a YAML merge (<<) needs a mapping, got {kind_of(source)}")
                merged.extend(items(source, path, _seen | {id(node)}))
            continue
        key = _key(key_node, path)
        if key in own:
            first = own[key][0].start_mark.line + 1
            raise Invalid(key_node, join(path, key), f"duplicate key (already defined on line {first})")
        own[key] = (key_node, key, value_node)
    result: dict[str, tuple[yaml.Node, str, yaml.Node]] = {}
    for item in merged:                      # the first merged mapping wins, as in YAML's merge spec
        result.setdefault(item[1], item)
    result.update(own)                       # explicit keys override merged ones
    return list(result.values())


def unknown(key_node: yaml.Node, path: str, key: str, allowed) -> Invalid:
    close = difflib.get_close_matches(key, list(allowed), n=1, cutoff=0.6)
    hint = f"did you mean {close[0]!r}?" if close else "allowed: " + ", ".join(sorted(allowed))
    return Invalid(key_node, join(path, key), f"unknown key ({hint})")


# --- checkers: each takes (node, path) and returns the Python value or raises Invalid -----

Checker = Callable[[yaml.Node, str], Any]


def string(node: yaml.Node, path: str) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise Invalid(node, path, f"expected a string, got {kind_of(node)}")
    value = scalar(node, path)
    if not isinstance(value, str):
        raise Invalid(node, path, f"expected a string, got {kind_of(node)} {show(value)}")
    return value


def choice(*options: str) -> Checker:
    def check(node: yaml.Node, path: str) -> str:
        value = scalar(node, path)
        if value not in options:
            raise Invalid(node, path, f"{show(value)} is not allowed (use {' | '.join(options)})")
        return value
    return check


def duration(minimum: float = 0.0, positive: bool = False, nullable: bool = False) -> Checker:
    def check(node: yaml.Node, path: str) -> float | None:
        value = scalar(node, path)
        if value is None and nullable:
            return None
        try:
            seconds = parse_duration(value)
        except DurationError as exc:
            raise Invalid(node, path, str(exc)) from None
        if seconds < minimum or (positive and seconds <= 0):
            least = f"at least {minimum:g}s" if minimum else "more than 0s"
            raise Invalid(node, path, f"{show(value)} is too short (use {least})")
        if seconds > MAX_DURATION:
            raise Invalid(node, path, f"{show(value)} is too long (use at most 3650d)")
        return seconds
    return check


def count(node: yaml.Node, path: str) -> int:
    value = scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Invalid(node, path, f"{show(value)} is not a count (use a whole number, 0 or more)")
    return value


def positive_count(node: yaml.Node, path: str) -> int:
    value = scalar(node, path)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise Invalid(node, path, f"{show(value)} is not a positive count (use a whole number, 1 or more)")
    return value


def boolean(node: yaml.Node, path: str) -> bool:
    value = scalar(node, path)
    if not isinstance(value, bool):
        raise Invalid(node, path, f"{show(value)} is not a boolean (use true or false)")
    return value


def timezone_name(node: yaml.Node, path: str) -> str:
    name = string(node, path)
    try:
        zoneinfo.ZoneInfo(name)
        return name
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    close = difflib.get_close_matches(name, sorted(zoneinfo.available_timezones()), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "use an IANA name such as UTC, Europe/Paris, Asia/Taipei"
    raise Invalid(node, path, f"{show(name)} is not a known timezone ({hint})")


def named(regex: re.Pattern, what: str, allowed: str) -> Checker:
    def check(node: yaml.Node, path: str) -> str:
        value = string(node, path)
        if not regex.match(value):
            raise Invalid(node, path, f"{show(value)} is not a valid {what} (use {allowed})")
        return value
    return check


secret_name = named(SECRET_NAME_RE, "secret name", "letters, digits, '_', '.' and '-'")


def list_of(item: Checker, single_ok: bool = True, nonempty: bool = False) -> Checker:
    def check(node: yaml.Node, path: str) -> tuple:
        if isinstance(node, yaml.SequenceNode):
            if nonempty and not node.value:
                raise Invalid(node, path, "the list is empty (give at least one item)")
            return tuple(item(child, f"{path}[{i}]") for i, child in enumerate(node.value))
        if single_ok and isinstance(node, yaml.ScalarNode) and not is_null(node):
            return (item(node, path),)
        raise Invalid(node, path, f"expected a list, got {kind_of(node)}")
    return check


def env_map(node: yaml.Node, path: str) -> dict[str, str]:
    """NAME: value pairs for the environment; values are taken as written (`1.10` stays "1.10")."""
    result = {}
    for key_node, key, value_node in items(node, path):
        where = join(path, key)
        if not ENV_NAME_RE.match(key):
            raise Invalid(key_node, where, f"{key!r} is not an environment variable name "
                          "(use letters, digits and '_', not starting with a digit)")
        if key.upper().startswith("PUPPEMON_"):
            raise Invalid(key_node, where, "names starting with PUPPEMON_ are reserved (choose another name)")
        value = scalar(value_node, where)
        if value is None:
            raise Invalid(value_node, where, "has no value (use '' for an empty string)")
        result[key] = value_node.value
    return result


def _json_value(node: yaml.Node, path: str, budget: list[int], stack: tuple = ()) -> Any:
    budget[0] -= 1
    if budget[0] < 0:
        raise Invalid(node, path, "too large (YAML aliases expand to more than 100000 values)")
    if id(node) in stack:
        raise Invalid(node, path, "a YAML alias refers to itself (params must be plain JSON values)")
    if isinstance(node, yaml.SequenceNode):
        return [_json_value(child, f"{path}[{i}]", budget, stack + (id(node),))
                for i, child in enumerate(node.value)]
    if isinstance(node, yaml.MappingNode):
        return {key: _json_value(value, join(path, key), budget, stack + (id(node),))
                for _, key, value in items(node, path)}
    value = scalar(node, path)
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(node, path, f"{node.value!r} is not a JSON number (use a finite number)")
    return value


def params(node: yaml.Node, path: str) -> dict:
    budget = [MAX_VALUE_NODES]
    return {key: _json_value(value, join(path, key), budget, (id(node),)) for _, key, value in items(node, path)}


def record(node: yaml.Node, path: str, fields: dict[str, Checker]) -> dict[str, Any]:
    """Check a mapping with a fixed set of keys; returns {key: checked value}."""
    values = {}
    for key_node, key, value_node in items(node, path):
        if key not in fields:
            raise unknown(key_node, path, key, fields)
        values[key] = fields[key](value_node, join(path, key))
    return values
