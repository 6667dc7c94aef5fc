"""The shape of the package, as docs/ARCHITECTURE.md draws it: layers import downward only, no
import cycles, small modules and functions, and one registry per extension point."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "puppemon"

# Lowest first. A module may import its own layer and the layers below it, never above.
LAYERS = [
    ["puppemon", "puppemon.errors", "puppemon.formats", "puppemon.ui"],
    ["puppemon.gitstore", "puppemon.secrets"],
    ["puppemon.project"],
    ["puppemon.run", "puppemon.history"],
    ["puppemon.daemon", "puppemon.web"],
    ["puppemon.commands"],
    ["puppemon.cli", "puppemon.__main__"],
]
# Packages of one layer that stay independent of each other.
INDEPENDENT = [("puppemon.run", "puppemon.history")]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def runtime_imports(path: Path, root: Path = ROOT) -> set[str]:
    """puppemon modules `path` imports when it runs (at the top or inside functions), not for type checkers."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                found.add(full if full in MODULES or (root / (full.replace(".", "/") + ".py")).exists() else base)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    return {m for m in found if m == "puppemon" or m.startswith("puppemon.")} - {name}


GRAPH = {name: runtime_imports(path) for name, path in MODULES.items()}


def layer_of(module: str) -> tuple[int, str]:
    best = None
    for index, layer in enumerate(LAYERS):
        for prefix in layer:
            if module == prefix or (prefix != "puppemon" and module.startswith(prefix + ".")):
                if best is None or len(prefix) > len(best[1]):
                    best = (index, prefix)
    assert best is not None, f"{module} is in no layer of tests/test_architecture.py: place it"
    return best


def test_every_module_has_a_layer():
    for module in MODULES:
        layer_of(module)


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Imports that go up a layer, or between packages that stay apart."""
    found = []
    for module, imports in sorted(graph.items()):
        mine, my_prefix = layer_of(module)
        for target in sorted(imports):
            theirs, their_prefix = layer_of(target)
            if theirs > mine:
                found.append(f"{module} imports {target} (layer {theirs} > {mine})")
            elif {my_prefix, their_prefix} in [set(pair) for pair in INDEPENDENT]:
                found.append(f"{module} imports {target} ({my_prefix} and {their_prefix} stay apart)")
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[str]:
    """Each cycle found by a depth-first walk, as `a -> b -> a`."""
    cycles = []
    state: dict[str, int] = {}   # 1 on the current path, 2 done
    path: list[str] = []

    def walk(module: str) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(path[path.index(target):] + [target]))
            elif target in graph and not state.get(target):
                walk(target)
        path.pop()
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            walk(module)
    return cycles


def test_layers_import_downward_only():
    assert upward_imports(GRAPH) == []


def test_no_import_cycles():
    assert import_cycles(GRAPH) == []


def test_the_checks_catch_what_they_are_for(tmp_path):
    """The oracle itself, on a package of its own: a lazy upward import, a cycle, a TYPE_CHECKING import."""
    records = tmp_path / "puppemon" / "history" / "records.py"
    records.parent.mkdir(parents=True)
    records.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from puppemon.cli import cli\n\n"
                       "def later():\n    from puppemon.daemon.loop import Daemon\n")
    module_imports = runtime_imports(records, root=tmp_path)
    assert module_imports == {"puppemon.daemon.loop"}     # the function-level import counts, the typing one not
    graph = {"puppemon.history.records": module_imports, "puppemon.daemon.loop": set(),
             "puppemon.run.spec": {"puppemon.history.records"}}
    assert upward_imports(graph) == [
        "puppemon.history.records imports puppemon.daemon.loop (layer 4 > 3)",
        "puppemon.run.spec imports puppemon.history.records (puppemon.run and puppemon.history stay apart)"]
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a -> b -> c -> a"]


@pytest.mark.parametrize("module", sorted(MODULES))
def test_modules_and_functions_are_small(module):
    path = MODULES[module]
    source = path.read_text()
    lines = source.count("\n")
    assert lines <= MAX_MODULE_LINES, f"{path.relative_to(ROOT)} has {lines} lines (at most {MAX_MODULE_LINES})"
    long = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            size = node.end_lineno - node.lineno + 1
            if size > MAX_FUNCTION_LINES:
                long.append(f"{node.name} ({size} lines)")
    assert long == [], f"{path.relative_to(ROOT)}: functions over {MAX_FUNCTION_LINES} lines: {', '.join(long)}"


def test_one_registry_per_extension_point():
    from puppemon.daemon.sources import SOURCES
    from puppemon.project.triggers import KINDS
    from puppemon.run.backends import BACKENDS

    assert set(BACKENDS) == {"local", "container", "slurm"}
    assert set(KINDS) == {"cron", "interval", "deploy", "file", "after"}
    # every trigger kind has a manifest key, and the daemon serves every kind
    from puppemon.project.manifest import FLOW_FIELDS

    assert {cls.key for cls in KINDS.values()} <= set(FLOW_FIELDS)
    assert set(SOURCES) == set(KINDS)
