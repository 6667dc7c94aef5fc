"""`python:` in the manifest: which Python environment a flow runs in, and what decides it.

Forms (in `defaults` or per flow)::

    python: system                                    # the daemon's own interpreter (the default)
    python: {requirements: requirements.txt}          # a pip requirements file of the project
    python: {project: tools, version: "3.12"}         # a directory with pyproject.toml and uv.lock (frozen)
    python: {script: true}                            # PEP 723 metadata in the entrypoint's file
    python: {version: "3.12"}                         # only an interpreter, no packages

What the files say is read from the project (a directory or the flows commit), so
`validate`, `push` and the daemon check the same thing; building is run/environments.py.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import yaml

from puppemon.formats import show
from puppemon.project.schema import Invalid, boolean, kind_of, record, scalar, string

VERSION_RE = re.compile(r"(?:cpython|pypy)?(?:[<>=~!]=?)?\d+(?:\.\d+){0,2}(?:,[<>=~!]=?\d+(?:\.\d+){0,2})*\Z")
SCRIPT_BLOCK = re.compile(r"(?m)^# /// (?P<type>[a-zA-Z0-9-]+)$\s(?P<content>(^#(| .*)$\s)+)^# ///$")


@dataclass(frozen=True)
class PythonEnv:
    """What a flow's environment is made from; `kind` is requirements, project, script or version."""

    kind: str
    path: str | None = None        # the requirements file, or the project directory (project-relative)
    version: str | None = None     # a version request for uv ("3.12", ">=3.11"), None: the daemon's Python

    def describe(self) -> str:
        where = {"requirements": f"requirements {self.path}", "project": f"project {self.path}",
                 "script": "script metadata", "version": "interpreter only"}[self.kind]
        return where + (f", Python {self.version}" if self.version else "")


def python_field(node: yaml.Node, path: str) -> PythonEnv | None:
    """The checker of `python:`; None for `system`."""
    if isinstance(node, yaml.ScalarNode) and node.value == "system":
        return None
    if not isinstance(node, yaml.MappingNode):
        raise Invalid(node, path, f"expected `system` or a mapping (requirements, project, script, version), "
                      f"got {kind_of(node) if not isinstance(node, yaml.ScalarNode) else show(node.value)}")
    values = record(node, path, {"requirements": _relative, "project": _relative, "script": boolean,
                                 "version": _version})
    kinds = [k for k in ("requirements", "project", "script") if values.get(k)]
    if len(kinds) > 1:
        raise Invalid(node, path, f"has both {kinds[0]} and {kinds[1]} (use one of requirements, project, script)")
    if values.get("script") is False and not kinds:
        raise Invalid(node, path, "script: false says nothing (use `python: system`, or remove the key)")
    if not kinds and "version" not in values:
        raise Invalid(node, path, "is empty (name requirements, project, script or version)")
    kind = kinds[0] if kinds else "version"
    return PythonEnv(kind, values.get(kind) if kind in ("requirements", "project") else None, values.get("version"))


def _relative(node: yaml.Node, path: str) -> str:
    value = string(node, path).strip()
    parts = value.split("/")
    if not value or value.startswith("/") or ".." in parts:
        raise Invalid(node, path, f"{show(value)} is not a path inside the project (use a relative path)")
    return "/".join(p for p in parts if p not in ("", ".")) or "."


def _version(node: yaml.Node, path: str) -> str:
    value = scalar(node, path)
    if not isinstance(value, str):  # unquoted, 3.10 is the number 3.1
        raise Invalid(node, path, f"{show(value)} is not a string (quote the version: \"{node.value}\")")
    if not VERSION_RE.match(value.replace(" ", "")):
        raise Invalid(node, path, f"{show(value)} is not a Python version request "
                      "(use a version such as \"3.12\" or \">=3.11\")")
    return value.replace(" ", "")


def script_dependencies(text: str) -> tuple[list[str], str | None]:
    """(dependencies, requires-python) of a file's PEP 723 `# /// script` block; ValueError when it has none
    or it is not valid TOML."""
    import tomllib

    blocks = [m for m in SCRIPT_BLOCK.finditer(text) if m.group("type") == "script"]
    if not blocks:
        raise ValueError("has no `# /// script` block (PEP 723 inline metadata)")
    if len(blocks) > 1:
        raise ValueError("has more than one `# /// script` block")
    content = "".join(line[2:] if line.startswith("# ") else line[1:]
                      for line in blocks[0].group("content").splitlines(keepends=True))
    try:
        meta = tomllib.loads(content)
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"has a `# /// script` block that is not valid TOML ({exc})") from None
    deps = meta.get("dependencies", [])
    if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
        raise ValueError("has a `# /// script` block whose dependencies are not a list of strings")
    requires = meta.get("requires-python")
    return deps, requires if isinstance(requires, str) else None


def inputs(flow, read, unknown: bytes = b"") -> dict[str, bytes]:
    """The project files that decide `flow`'s environment ({path: content}); ValueError saying what is
    missing. `read` is an entrypoints.Reader, whose `unknown` answer (a file not readable here) passes."""
    env: PythonEnv = flow.python
    if env.kind == "requirements":
        files = {env.path: read(env.path)}
    elif env.kind == "project":
        base = "" if env.path == "." else f"{env.path}/"
        files = {f"{base}pyproject.toml": read(f"{base}pyproject.toml"), f"{base}uv.lock": read(f"{base}uv.lock")}
    elif env.kind == "script":
        script = (flow.entrypoint or "").split(":")[0]
        if not script.endswith(".py"):
            raise ValueError("script: true needs an entrypoint that is a file (path/to/file.py:function)")
        files = {script: read(script)}
    else:
        return {}
    for name, data in files.items():
        if data is None:
            raise ValueError(f"{name} is not in the project"
                             + (" (lock it with `uv lock` and commit uv.lock)" if name.endswith("uv.lock") else ""))
    if env.kind == "script" and unknown not in files.values():
        [(name, data)] = files.items()
        try:
            script_dependencies(data.decode("utf-8", "replace"))
        except ValueError as exc:
            raise ValueError(f"{name} {exc}") from None
    return files
